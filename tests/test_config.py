"""Config: shipped files, precedence, every class of error, round trip, built optimizers."""
import dataclasses
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import config as C
from funcnn.config import ConfigError

CONFIGS = sorted((pathlib.Path(__file__).parents[1] / "configs").glob("*.toml"))


def test_the_expected_configs_ship():
    assert {p.stem for p in CONFIGS} >= {"digits", "digits_lbfgs", "two_lines", "sine", "mnist"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_builds(path):
    cfg = C.load_config(path)
    assert path.read_text().startswith("#")  # a comment header says what it is
    assert f"funcnn train configs/{path.name}" in path.read_text()
    net = C.build_model(cfg.model)
    assert net.spec.sizes == cfg.model.sizes
    if cfg.optimizer.name == "lbfgs":
        with pytest.raises(ConfigError, match="lbfgs_minimize"):
            C.build_optimizer(cfg.optimizer, 100)
    else:
        C.build_optimizer(cfg.optimizer, 100)
    assert C.config_from_dict(C.config_to_dict(cfg)) == cfg


def test_digits_configs_hold_the_agreed_settings():
    main = C.load_config(CONFIGS[0].with_name("digits.toml"))
    assert (main.model.sizes, main.optimizer.name, main.optimizer.schedule) == ((64, 256, 10), "adam", "cosine")
    # The tuned main job (README "Results"): 15 epochs over shift-augmented data.
    assert (main.training.epochs, main.training.batch_size, main.optimizer.learning_rate) == (15, 64, 2e-3)
    assert main.data.standardize and main.data.augment
    classic = C.load_config(CONFIGS[0].with_name("digits_lbfgs.toml"))
    m = classic.model
    assert (m.sizes, m.hidden, m.output, m.loss, m.l2, m.init, m.init_epsilon) == (
        (64, 25, 10), "sigmoid", "sigmoid", "binary_cross_entropy", 1.0, "uniform", 0.12)
    assert (classic.optimizer.name, classic.optimizer.max_iters, classic.training.batch_size) == ("lbfgs", 200, 0)
    assert C.build_model(m).spec.init.epsilon == 0.12


def test_defaults_are_the_digits_main_job():
    cfg = C.load_config()
    assert cfg == C.Config()
    assert cfg.model == C.ModelConfig((64, 256, 10), "relu", "softmax", "cross_entropy", 0.0,
                                      "xavier_normal")
    assert cfg.model.dropout == 0.0 and cfg.optimizer.name == "adam" and cfg.data.name == "digits"


def test_precedence_defaults_then_file_then_overrides(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[model]\nhidden = "tanh"\nsizes = [64, 32, 10]\n'
                 '[optimizer]\nlearning_rate = 0.01\nb1 = 0.8\n')
    cfg = C.load_config(f, ["optimizer.learning_rate=2e-2", "model.sizes=[64,16,16,10]",
                            "training.early_stopping=3", "data.val_size=0.1"])
    assert cfg.model.hidden == "tanh"  # file beats default
    assert cfg.optimizer.b1 == 0.8
    assert cfg.optimizer.learning_rate == 0.02  # override beats file
    assert cfg.model.sizes == (64, 16, 16, 10)
    assert cfg.optimizer.b2 == 0.999 and cfg.training.batch_size == 32  # untouched defaults
    assert cfg.training.early_stopping == 3


def test_override_value_parsing(tmp_path):
    cfg = C.load_config(None, ["model.hidden=tanh", "optimizer.learning_rate=1",
                               "optimizer.clip_norm=1.5", "data.name=csv", "data.path=data/x.csv",
                               "data.target=1", "output.plots=false", 'output.dir="my runs"'])
    assert cfg.model.hidden == "tanh"
    assert cfg.optimizer.learning_rate == 1.0 and isinstance(cfg.optimizer.learning_rate, float)
    assert cfg.optimizer.clip_norm == 1.5
    assert cfg.data.path == "data/x.csv" and cfg.data.target == "1"  # string fields take the text
    assert cfg.output.plots is False and cfg.output.dir == "my runs"
    cfg = C.load_config(None, ["optimizer.clip_norm=2", "optimizer.clip_norm=none"])
    assert cfg.optimizer.clip_norm is None  # later overrides win; none clears an optional


@pytest.mark.parametrize("overrides, message", [
    # unknown keys and sections, with suggestions
    (["model.hiden=tanh"], r"Unknown config key 'model\.hiden'.*did you mean 'model\.hidden'\?"),
    (["model.learning_rate=0.1"], r"did you mean 'optimizer\.learning_rate'\?"),
    (["modle.hidden=tanh"], r"Unknown config section 'modle'.*did you mean 'model'\?"),
    # malformed overrides
    (["model.hidden"], r"'model\.hidden' must look like 'section\.key=value'"),
    (["hidden=tanh"], r"'hidden' must be 'section\.key'"),
    # wrong types
    (["optimizer.learning_rate=fast"], r"optimizer\.learning_rate must be a number; got 'fast' \(str\)"),
    (["training.batch_size=1.5"], r"training\.batch_size must be an integer; got 1\.5 \(float\)"),
    (["training.epochs=true"], r"training\.epochs must be an integer; got True \(bool\)"),
    (["model.l2=true"], r"model\.l2 must be a number; got True \(bool\)"),
    (["model.sizes=[64, 3.5, 10]"], r"model\.sizes must be a list of integers"),
    (["data.stratify=1"], r"data\.stratify must be true or false; got 1"),
    # out of range
    (["optimizer.learning_rate=0"], r"optimizer\.learning_rate must be a finite number > 0; got 0\.0"),
    (["optimizer.learning_rate=-1e-3"], r"learning_rate must be a finite number > 0; got -0\.001"),
    (["training.batch_size=-4"], r"training\.batch_size must be .*0 for full batch; got -4"),
    (["training.epochs=0"], r"training\.epochs must be a positive integer; got 0"),
    (["model.dropout=1.0"], r"model\.dropout must be a number in \[0, 1\); got 1\.0"),
    (["data.test_size=1"], r"data\.test_size must be a number in \(0, 1\); got 1\.0"),
    (["data.test_size=0"], r"data\.test_size must be a number in \(0, 1\)"),
    (["optimizer.b1=1"], r"optimizer\.b1 must be a number in \[0, 1\)"),
    (["model.sizes=[64]"], r"model\.sizes must be at least two positive layer widths"),
    # names not allowed, with the allowed list and a suggestion
    (["model.hidden=tanhh"], r"model\.hidden='tanhh' is not allowed; choose one of \[.*'relu'.*Did you mean 'tanh'\?"),
    (["optimizer.name=adamm"], r"optimizer\.name='adamm'.*'lbfgs'.*Did you mean 'adam'"),
    (["optimizer.schedule=cosin"], r"Did you mean 'cosine'"),
    (["model.init=he"], r"model\.init='he' is not allowed"),
    (["data.name=digit"], r"data\.name='digit'.*Did you mean 'digits'"),
    (["training.grad=auto"], r"training\.grad='auto'"),
    # combinations
    (["model.output=sigmoid"], r"model\.output='sigmoid' with model\.loss='cross_entropy': loss='cross_entropy' does not fit output='sigmoid'"),
    (["training.early_stopping=3"], r"training\.early_stopping needs .*data\.val_size"),
    (["optimizer.name=lbfgs"], r"lbfgs' is full-batch: set training\.batch_size = 0"),
    (["optimizer.weight_decay=0.1"], r"only used by adamw"),
    (["optimizer.schedule=step"], r"needs optimizer\.decay_steps > 0"),
    (["data.name=mnist"], r"needs data\.path"),
    (["model.sizes=[10, 10]"], r"data\.name='digits' has 64 input features"),
    (["data.val_size=0.7"], r"test_size \+ data\.val_size must be < 1"),
])
def test_errors_name_the_key_the_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        C.load_config(None, overrides)


def test_errors_say_where_a_value_was_set(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[optimizer]\nlearning_rate = -1\n")
    with pytest.raises(ConfigError, match=r"learning_rate.*got -1\.0 \(set by config file '.*bad\.toml'\)"):
        C.load_config(f)
    with pytest.raises(ConfigError, match=r"\(set by override 'optimizer\.learning_rate=-2'\)"):
        C.load_config(f, ["optimizer.learning_rate=-2"])


@pytest.mark.parametrize("text, message", [
    ('[model]\nhiden = "tanh"\n', r"Unknown config key 'model\.hiden' in '.*f\.toml'; did you mean 'model\.hidden'"),
    ('[optimiser]\nname = "sgd"\n', r"Unknown config section 'optimiser' in .*did you mean 'optimizer'"),
    ('model = 3\n', r"'model' must be a table"),
    ('[model\n', r"is not valid TOML"),
])
def test_file_errors(tmp_path, text, message):
    f = tmp_path / "f.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        C.load_config(f)


def test_missing_file_and_non_list_overrides(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        C.load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="wrap it in a list"):
        C.load_config(None, "model.hidden=tanh")


def test_round_trip_through_json():
    cfg = C.load_config(None, ["optimizer.clip_norm=1.0", "training.early_stopping=4",
                               "data.val_size=0.2", "model.dropout=0.1"])
    d = C.config_to_dict(cfg)
    assert C.config_from_dict(json.loads(json.dumps(d))) == cfg
    assert d["model"]["sizes"] == [64, 256, 10] and "path" not in d["data"]  # None left out
    with pytest.raises(ConfigError, match=r"Unknown config key 'training\.epoch'.*'training\.epochs'"):
        C.config_from_dict({"training": {"epoch": 3}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.hidden = "tanh"


# -------------------------------------------------------------- built optimizers

P = {"w": jnp.array([1.0, -2.0], jnp.float64)}
G = {"w": jnp.array([0.5, -0.25], jnp.float64)}
LR = 0.1


def _first_update(opt_cfg, total_steps=100, count=None):
    opt = C.build_optimizer(opt_cfg, total_steps)
    state = opt.init(P)
    if count is not None:  # jump the schedule to update number `count`
        state = jax.tree.map(lambda a: jnp.full_like(a, count), state)
    updates, _ = opt.update(G, state, P)
    return np.asarray(updates["w"])


g, p = np.asarray(G["w"]), np.asarray(P["w"])
EXPECTED = {  # the first update of each rule, written from its formula
    "sgd": -LR * g,
    "momentum": -LR * g,  # v = -lr g
    "nesterov": -LR * g * (1 + 0.9),  # theta += beta v - lr g, v = -lr g
    "adagrad": -LR * g / (np.sqrt(0.1 + g**2) + 1e-8),
    "rmsprop": -LR * g / (np.sqrt(0.1 * g**2) + 1e-8),
    "adam": -LR * g / (np.abs(g) + 1e-8),  # m_hat = g, v_hat = g**2
    "adamw": -LR * (g / (np.abs(g) + 1e-8) + 0.01 * p),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_build_optimizer_first_update_matches_the_formula(name):
    cfg = C.OptimizerConfig(name=name, learning_rate=LR, weight_decay=0.01 if name == "adamw" else 0.0)
    np.testing.assert_allclose(_first_update(cfg), EXPECTED[name], rtol=1e-12)


def test_clip_norm_chains_clipping_first():
    u = _first_update(C.OptimizerConfig(name="sgd", learning_rate=LR, clip_norm=0.1))
    np.testing.assert_allclose(u, -LR * g * 0.1 / np.linalg.norm(g), rtol=1e-12)
    assert np.array_equal(_first_update(C.OptimizerConfig(name="sgd", learning_rate=LR, clip_norm=0.0)), -LR * g)


@pytest.mark.parametrize("schedule, extra, at_start, at_end", [
    ("constant", {}, LR, LR),
    ("cosine", {"final_lr_fraction": 0.1}, LR, 0.1 * LR),
    ("cosine", {}, LR, 0.0),
    ("warmup_cosine", {"warmup_steps": 10, "final_lr_fraction": 0.1}, 0.0, 0.1 * LR),
    ("exponential", {"decay_rate": 0.5}, LR, 0.5 * LR),  # decay_steps 0 = the whole run
    ("step", {"decay_rate": 0.5, "decay_steps": 40}, LR, 0.25 * LR),  # drops at 40 and 80 of 100
])
def test_schedules_at_the_first_and_last_step(schedule, extra, at_start, at_end):
    cfg = C.OptimizerConfig(name="sgd", learning_rate=LR, schedule=schedule, **extra)
    np.testing.assert_allclose(_first_update(cfg), -at_start * g, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_first_update(cfg, count=100), -at_end * g, rtol=1e-12, atol=1e-15)


def test_warmup_peaks_at_the_learning_rate():
    cfg = C.OptimizerConfig(name="sgd", learning_rate=LR, schedule="warmup_cosine", warmup_steps=10)
    np.testing.assert_allclose(_first_update(cfg, count=5), -0.5 * LR * g, rtol=1e-12)
    np.testing.assert_allclose(_first_update(cfg, count=10), -LR * g, rtol=1e-12)
    assert math.isclose(float(_first_update(cfg, count=55)[0] / -g[0]), LR / 2, rel_tol=1e-12)


def test_build_optimizer_errors():
    with pytest.raises(ConfigError, match="lbfgs_minimize"):
        C.build_optimizer(C.OptimizerConfig(name="lbfgs"), 100)
    with pytest.raises(ConfigError, match="total_steps must be a positive integer; got 0"):
        C.build_optimizer(C.OptimizerConfig(), 0)
    with pytest.raises(ConfigError, match=r"warmup_steps=10 must be less than the run's 10 total steps"):
        C.build_optimizer(C.OptimizerConfig(schedule="warmup_cosine", warmup_steps=10), 10)
    assert C.build_optimizer(C.Config(), 10).init(P)  # a whole Config is accepted
