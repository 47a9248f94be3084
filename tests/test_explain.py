"""``funcnn explain``: the printed numbers of the two worked networks equal the published ones.

The published values are read from ``scripts/reproduce_examples.py`` (typed in
from the material, as in ``tests/test_examples.py``), never from funcnn's output.
"""
import importlib.util
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from app_helpers import REPO, run_cli

import funcnn
from funcnn import cli
from funcnn.app import explain


def _published():
    spec = importlib.util.spec_from_file_location("funcnn_published", REPO / "scripts" / "reproduce_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PUB = _published()
TOL = PUB.TOL_ROUNDING  # 1e-15: the published tolerance for numbers one rounding away


def values(text: str) -> dict:
    """Every ``name = [...]`` or ``name = number`` at the end of a printed segment, by name (the last wins:
    ``W1`` is the step's result). The ``layer l:`` headers, which list the starting weights, are skipped."""
    found = {}
    for line in text.splitlines():
        if line.startswith("layer "):
            continue
        for part in line.split("    "):
            m = re.match(r"^\s*([^=]+?) = .*?(\[.*\]|-?[\d.e+-]+)$", part)
            if m:
                found[m.group(1).strip()] = json.loads(m.group(2))
    return found


def run_example(name, capsys) -> dict:
    assert cli.main(["explain", "--example", name]) == 0
    return values(capsys.readouterr().out)


# As published (and quoted in issue 14): typed in here too, so an edit of the script cannot move them.
PUBLISHED_Y_222 = [0.7122574322957417, 0.5330975738715015]
PUBLISHED_231 = {"loss": 162, "dW1": [[18, 36], [36, 72], [0, 0]], "db1": [18, 36, 0], "dW2": [[108, 126, 0]],
                 "db2": [18]}


def test_the_published_numbers_are_the_scripts():
    assert PUB.SIGMOID_222["y"] == PUBLISHED_Y_222
    assert {k: PUB.RELU_231[k] for k in PUBLISHED_231} == PUBLISHED_231


def test_sigmoid_2_2_2_prints_the_published_outputs():
    done = run_cli("explain", "--example", "sigmoid-2-2-2")  # as a user runs it
    assert done.returncode == 0 and done.stderr == "", done.stderr
    got = values(done.stdout)
    np.testing.assert_allclose(got["y"], PUBLISHED_Y_222, rtol=0, atol=TOL)  # one rounding of float64 apart


def test_relu_2_3_1_prints_the_published_loss_gradients_and_step(capsys):
    e = PUB.RELU_231
    got = run_example("relu-2-3-1", capsys)
    assert got["y"] == [e["prediction"]] == [21] and got["loss L"] == PUBLISHED_231["loss"]
    for name in ("dW1", "db1", "dW2", "db2"):
        assert got[f"dL/{name}"] == PUBLISHED_231[name], name
    for name in ("dW1", "db1", "dW2", "db2"):
        assert got[f"dL/{name}"] == e[name], name  # integers: exact
    assert got["dL/dz2"] == e["db2"] and got["dL/dz1"] == e["db1"]  # one example: dL/dz = dL/db
    np.testing.assert_allclose(got["W1"], e["W1_new"], rtol=0, atol=TOL)
    np.testing.assert_allclose(got["b1"], e["b1_new"], rtol=0, atol=TOL)
    np.testing.assert_allclose(got["W2"], e["W2_new"], rtol=0, atol=TOL)
    np.testing.assert_allclose(got["b2"], e["b2_new"], rtol=0, atol=TOL)
    np.testing.assert_allclose(got["after the step: y'"], [e["trace"][1]], rtol=PUB.TOL_TRACE_REL)


def test_a_deeper_network_prints_jax_grads_and_the_chain_between_layers():
    net = funcnn.mlp([2, 3, 2, 1], hidden="tanh", output="identity", loss="mse")
    params = net.init(jax.random.key(3), dtype=jnp.float64)
    x, t = jnp.asarray([[0.5, -1.5]]), jnp.asarray([[2.0]])
    text = explain.explain_text(net, params, x, t, 0.1, title="test")
    got = values(text)
    want = jax.grad(net.loss)(params, x, t)  # autodiff of the forward-only loss: the reference
    for k in (1, 2, 3):
        np.testing.assert_allclose(got[f"dL/dW{k}"], np.asarray(want[k - 1]["W"]).T, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(got[f"dL/db{k}"], want[k - 1]["b"], rtol=1e-13, atol=1e-15)
    for k, f in ((1, "tanh"), (2, "tanh")):  # dL/da_l = W_{k+1} dL/dz_{k+1}, from the printed numbers
        dz_next = np.asarray(got[f"dL/dz{k + 1}"])
        np.testing.assert_allclose(got[f"dL/da{k}"], np.asarray(params[k]["W"]) @ dz_next, rtol=1e-13)
        assert f"dL/dz{k} = dL/da{k} * {f}'(z{k}) = " in text


def test_too_big_or_unknown_is_one_line_error(capsys):
    assert cli.main(["explain", "--example", "nope"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "funcnn: error: unknown --example 'nope'; the presets are sigmoid-2-2-2, relu-2-3-1."]
    done = run_cli("explain", REPO / "configs" / "digits.toml")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "funcnn: error: explain prints every number, so it is for small networks (at most 10 units per layer); "
        "this one has widths [64, 256, 10]. Try --example relu-2-3-1 or configs/two_lines.toml."]


def test_a_small_config_is_explained(capsys):
    assert cli.main(["explain", str(Path(REPO / "configs" / "two_lines.toml"))]) == 0
    got = values(capsys.readouterr().out)
    assert len(got["x"]) == 2 and len(got["dL/dW1"]) == 2 and "loss L" in got


def test_a_checkpoint_is_explained_on_its_runs_first_test_example(tmp_path, capsys):
    from funcnn import checkpoint, experiment
    from funcnn import config as cfglib

    cfg = cfglib.load_config(REPO / "configs" / "two_lines.toml")
    split = experiment.load_split(cfg)
    net, opt = experiment.build(cfg, split.x_train.shape[0])
    state = experiment.initial_state(cfg, net, opt)
    checkpoint.save(tmp_path / "final.ckpt", state, spec=net.spec, config=cfglib.config_to_dict(cfg))
    assert cli.main(["explain", str(tmp_path / "final.ckpt")]) == 0
    out = capsys.readouterr().out
    got = values(out)
    np.testing.assert_allclose(got["x"], np.asarray(split.x_test[0], np.float64), rtol=1e-7)  # float32 run
    assert "the first test example of the run's split" in out
    W1 = np.asarray(state.params[0]["W"], np.float64).T  # the checkpoint's weights, one row per unit
    assert f"W1 = {explain.mat(W1)}" in out
