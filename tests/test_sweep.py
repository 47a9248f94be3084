"""funcnn.app.sweep: `train --seeds`, `funcnn sweep`, `funcnn config`."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from funcnn import checkpoint, cli, experiment, train
from funcnn import config as cfglib
from funcnn.app import sweep

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "two_lines.toml")
FAST = ["--set", "training.epochs=3", "--set", "output.plots=false", "--set", "data.n_samples=120"]


def test_seeds_train_at_once_and_match_single_runs(tmp_path, capsys):
    assert cli.main(["train", CONFIG, "--seeds", "3", "--out", str(tmp_path / "s"), *FAST]) == 0
    out = capsys.readouterr().out
    assert "3 seeds (0..2) trained at once" in out and "test_accuracy" in out and "+-" in out
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    accs = [p["test_accuracy"] for p in summary["per_seed"]]
    m, s = summary["mean_std"]["test_accuracy"]
    np.testing.assert_allclose([m, s], [np.mean(accs), np.std(accs)], rtol=1e-12)
    # seed 1's model is the single run with training.seed=1's training key on seed 0's split
    ck = checkpoint.load(tmp_path / "s" / "seed-1" / "final.ckpt")
    cfg = cfglib.load_config(CONFIG, [FAST[i + 1] for i in range(0, len(FAST), 2)])
    split = experiment.load_split(cfg)
    one = cfglib.config_from_dict(ck.config)
    assert one.training.seed == 1 and ck.extra["data_seed"] == 0
    net, opt = experiment.build(cfg, split.x_train.shape[0])
    state, _ = train.fit(net, opt, (split.x_train, experiment.targets(net, split.y_train)), epochs=3,
                         batch_size=cfg.training.batch_size, key=experiment.keys(one)[1])
    for got, want in zip(ck.params, state.params, strict=True):
        np.testing.assert_allclose(np.asarray(got["W"]), np.asarray(want["W"]), rtol=1e-5, atol=1e-6)


def test_sweep_ranks_by_validation_and_writes_a_trainable_best_config(tmp_path, capsys):
    args = ["sweep", CONFIG, "--grid", "optimizer.learning_rate=1e-3,3e-2", "--grid", "model.dropout=0,0.2",
            "--seeds", "2", "--out", str(tmp_path / "sw"), "--set", "data.val_size=0.2", *FAST]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "4 combinations x 2 seeds in 1 compiled group(s)" in out  # lr and dropout differences are vmapped
    rows = list(csv.DictReader((tmp_path / "sw" / "results.csv").open()))
    assert len(rows) == 8
    combo = lambda r: (r["optimizer.learning_rate"], r["model.dropout"])  # noqa: E731
    means = {}
    for r in rows:
        means.setdefault(combo(r), []).append(float(r["val_loss"]))
    order = list(dict.fromkeys(combo(r) for r in rows))
    assert [np.mean(means[c]) for c in order] == sorted(np.mean(v) for v in means.values())
    best = cfglib.load_config(tmp_path / "sw" / "best.toml")
    assert (repr(best.optimizer.learning_rate), repr(best.model.dropout)) == \
        tuple(repr(float(v)) for v in order[0])
    assert cli.main(["train", str(tmp_path / "sw" / "best.toml"), "--out", str(tmp_path / "again"),
                     "--quiet", "--set", "output.gradcheck=false", "--set", "output.plots=false"]) == 0


@pytest.mark.parametrize("other", [{"model.l2": ["0", "0.5"]}, {"model.dropout": ["0", "0.3"]},
                                   {"model.l2": ["0", "0.5"], "model.dropout": ["0.1", "0.4"]}],
                         ids=["l2", "dropout", "l2+dropout"])
def test_learning_rates_l2_and_dropout_vmap_as_one_group_equal_to_separate_runs(tmp_path, capsys, other):
    grid = {"optimizer.learning_rate": ["1e-3", "3e-2"], **other}
    args = ["sweep", CONFIG, *(a for k, v in grid.items() for a in ("--grid", f"{k}={','.join(v)}")),
            "--out", str(tmp_path / "sw"), "--set", "data.val_size=0.2", *FAST]
    assert cli.main(args) == 0
    n = 2 ** len(grid)
    assert f"{n} combinations x 1 seeds in 1 compiled group(s)" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "sw" / "results.csv").open()))
    assert len(rows) == n and len({r["val_loss"] for r in rows}) == n  # every scalar changes the run
    for r in rows:  # each vmapped model is the run its config trains alone
        sets = [FAST[i + 1] for i in range(0, len(FAST), 2)] + ["data.val_size=0.2"]
        cfg = cfglib.load_config(CONFIG, sets + [f"{k}={r[k]}" for k in grid])
        split = experiment.load_split(cfg)
        net, opt = experiment.build(cfg, split.x_train.shape[0])
        state, hist = train.fit(net, opt, (split.x_train, experiment.targets(net, split.y_train)), epochs=3,
                            batch_size=cfg.training.batch_size, key=experiment.keys(cfg)[1],
                            validation=(split.x_val, experiment.targets(net, split.y_val)))
        np.testing.assert_allclose(float(r["val_loss"]), hist.val_loss[-1], rtol=1e-4)
        assert float(r["test_loss"]) == pytest.approx(
            experiment.evaluate_split(net, state.params, split.x_test, split.y_test)["loss"], rel=1e-4)


def test_to_toml_round_trips_configs_with_lists_and_layers():
    cfg = cfglib.load_config(None, ["model.hidden=[\"relu\", \"tanh\"]", "model.sizes=[64, 8, 8, 10]",
                                    "optimizer.clip_norm=1.5", "training.early_stopping=3",
                                    "data.val_size=0.1"])
    text = sweep.to_toml(cfg)
    assert 'hidden = ["relu", "tanh"]' in text and "clip_norm = 1.5" in text


def test_grid_values_keep_lists_whole():
    assert sweep.parse_grid(["model.sizes=[2,8,1],[2,16,1]", "model.dropout=0,0.1"]) == [
        ("model.sizes", ["[2,8,1]", "[2,16,1]"]), ("model.dropout", ["0", "0.1"])]


@pytest.mark.parametrize("argv,match", [
    (["sweep", CONFIG, "--grid", "optimizer.learning_rate=1e-3,1e-2"], "set data.val_size"),
    (["sweep", CONFIG, "--grid", "optimizer.learning_rate"], "must look like KEY=V1,V2"),
    (["sweep", CONFIG, "--grid", "optimizer.lerning_rate=1,2", "--set", "data.val_size=0.2"], "learning_rate"),
    (["train", CONFIG, "--seeds", "0"], "--seeds must be >= 1; got 0"),
    (["train", CONFIG, "--seeds", "2", "--set", "optimizer.name=lbfgs", "--set", "training.batch_size=0"],
     "lbfgs"),
])
def test_bad_requests_are_one_line_errors(tmp_path, argv, match):
    r = subprocess.run([sys.executable, "-m", "funcnn", *argv, "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("funcnn: error:"), r.stderr
    assert match in lines[0] and not (tmp_path / "x").exists()


def test_config_command_lists_every_key_with_type_default_and_allowed(capsys):
    assert cli.main(["config", CONFIG, "--set", "model.hidden=tanh"]) == 0
    out = capsys.readouterr().out
    for section, cls in cfglib.SECTIONS.items():
        assert f"[{section}]" in out
        for f in cls.__dataclass_fields__:
            assert f"  {f} = " in out, f
    assert 'hidden = "tanh"   (changed)' in out
    assert "allowed: sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, lbfgs" in out
    assert "type int; default 60" in out  # training.epochs
    assert cli.main(["config", CONFIG, "--toml"]) == 0
    assert "[training]" in capsys.readouterr().out
