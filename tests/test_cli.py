"""The funcnn command, driven in-process through funcnn.cli.main."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from funcnn import checkpoint, cli

CONFIGS = Path(__file__).parents[1] / "configs"
FAST = ["training.epochs=4", "output.plots=false"]


def _train(tmp_path, name, *extra, out="run", config="two_lines"):
    args = ["train", str(CONFIGS / f"{config}.toml"), "--out", str(tmp_path / out), "--quiet"]
    for s in FAST + list(extra):
        args += ["--set", s]
    return cli.main(args)


def test_train_writes_a_complete_run_directory(tmp_path, capsys):
    assert _train(tmp_path, "two_lines") == 0
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.jsonl", "final.ckpt", "best.ckpt", "last.ckpt", "gradcheck.txt",
            "summary.json"} <= names
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [0, 1, 2, 3] and all(np.isfinite(l["train_loss"]) for l in lines)
    assert json.loads((run / "config.json").read_text())["training"]["epochs"] == 4
    assert "PASSED" in (run / "gradcheck.txt").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["gradcheck_passed"] is True and 0 <= summary["test"]["accuracy"] <= 1
    ck = checkpoint.load(run / "final.ckpt")
    assert ck.spec.sizes == (2, 2, 1) and int(ck.step) > 0
    assert "test accuracy" in capsys.readouterr().out


def test_never_overwrites_an_existing_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert _train(tmp_path, "two_lines") == 2
    err = capsys.readouterr().err
    assert err.startswith("funcnn: error: --out") and "already exists" in err and "Traceback" not in err


@pytest.mark.parametrize("override,match", [
    ("model.hiden=tanh", "did you mean 'model.hidden'"),
    ("optimizer.learning_rate=fast", "optimizer.learning_rate"),
    ("training.epochs=0", "training.epochs"),
])
def test_config_errors_are_one_line_on_stderr(tmp_path, capsys, override, match):
    assert _train(tmp_path, "two_lines", override) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("funcnn: error:") and match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()  # rejected before any work


def test_mnist_config_names_the_missing_files(tmp_path, capsys):
    code = cli.main(["train", str(CONFIGS / "mnist.toml"), "--set", f"data.path={tmp_path}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and all(f in err for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])


def test_resume_after_interruption_is_bit_identical(tmp_path, monkeypatch):
    assert _train(tmp_path, "sine", config="sine", out="full") == 0
    calls = []
    real_update = cli._Progress.update

    def interrupt(self, epoch, m):
        real_update(self, epoch, m)
        calls.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt  # like Ctrl-C after the second epoch's checkpoint
    monkeypatch.setattr(cli._Progress, "update", interrupt)
    assert _train(tmp_path, "sine", config="sine", out="cut") == 130  # Ctrl-C: one line, exit 130
    monkeypatch.setattr(cli._Progress, "update", real_update)
    assert not (tmp_path / "cut" / "final.ckpt").exists()
    assert cli.main(["resume", str(tmp_path / "cut"), "--quiet"]) == 0
    a, b = checkpoint.load(tmp_path / "full" / "final.ckpt"), checkpoint.load(tmp_path / "cut" / "final.ckpt")
    for la, lb in zip(a.params, b.params):
        np.testing.assert_array_equal(np.asarray(la["W"]), np.asarray(lb["W"]))
        np.testing.assert_array_equal(np.asarray(la["b"]), np.asarray(lb["b"]))
    assert int(a.step) == int(b.step)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 4


def test_gradcheck_command_prints_the_table(capsys):
    code = cli.main(["gradcheck", str(CONFIGS / "two_lines.toml"), "--dtype", "float64"])
    out = capsys.readouterr().out
    assert code == 0 and "[0]['W']" in out and "finite_diff" in out and "PASSED" in out


def test_evaluate_and_predict(tmp_path, capsys):
    assert _train(tmp_path, "two_lines") == 0
    ck = tmp_path / "run" / "final.ckpt"
    capsys.readouterr()
    assert cli.main(["evaluate", str(ck)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out and "precision" in out
    x = np.array([[0.0, 0.0], [2.0, 2.0], [0.1, -0.2]], np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["predict", str(ck), str(tmp_path / "x.npy"), "--labels"]) == 0
    labels = capsys.readouterr().out.split()
    assert len(labels) == 3 and set(labels) <= {"0", "1"}
    assert cli.main(["predict", str(ck), str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.npy")]) == 0
    p = np.load(tmp_path / "p.npy", allow_pickle=False)
    assert p.shape == (3, 1) and ((p >= 0) & (p <= 1)).all()
    np.save(tmp_path / "bad.npy", np.ones((2, 5), np.float32))
    assert cli.main(["predict", str(ck), str(tmp_path / "bad.npy")]) == 2
    assert "rows of 2 features" in capsys.readouterr().err


def test_corrupted_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert _train(tmp_path, "two_lines") == 0
    raw = (tmp_path / "run" / "final.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(raw[: len(raw) // 2])
    assert cli.main(["evaluate", str(tmp_path / "cut.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "funcnn: error:" in err and "cut.ckpt" in err and "Traceback" not in err


def test_every_command_has_help(capsys):
    for cmd in ["train", "gradcheck", "evaluate", "predict", "resume"]:
        with pytest.raises(SystemExit) as e:
            cli.main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: funcnn " + cmd in capsys.readouterr().out


def test_progress_on_stderr_and_plots_after_the_summary(tmp_path, capsys, monkeypatch):
    """Not quiet: each slow step is announced on stderr, and the summary is printed before any plot is drawn."""
    printed_before_plots = []
    real = cli._try_plots

    def spy(cfg, run_dir, *args):
        printed_before_plots.append((capsys.readouterr(), sorted(p.name for p in run_dir.glob("*.png"))))
        return real(cfg, run_dir, *args)

    monkeypatch.setattr(cli, "_try_plots", spy)
    code = cli.main(["train", str(CONFIGS / "two_lines.toml"), "--out", str(tmp_path / "run"),
                     "--set", "training.epochs=2", "--set", "output.plots=true"])
    assert code == 0 and len(printed_before_plots) == 1
    (out, err), pngs = printed_before_plots[0]
    assert "test accuracy" in out and "training time" in out and pngs == []
    steps = ["loading the two_lines data...", "checking the hand-derived gradient on the first batch",
             "compiling the training program...", "drawing plots..."]
    assert [err.find(s) for s in steps] == sorted(err.find(s) for s in steps) and all(s in err for s in steps)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["plots"]  # rewritten with the plots
    assert (tmp_path / "run" / "history.png").exists()


def test_quiet_says_nothing_on_stderr(tmp_path, capsys):
    assert _train(tmp_path, "two_lines", "training.epochs=1") == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("test accuracy")


# The compilation cache, through the command in a subprocess with its own HOME
# and XDG_CACHE_HOME (conftest turns the cache off for every other test).

def _funcnn(tmp_path, *args, xdg=True, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("FUNCNN_NO_COMPILE_CACHE", "XDG_CACHE_HOME")}
    e.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(CONFIGS.parent), **env)
    if xdg:
        e["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    return subprocess.run([sys.executable, "-m", "funcnn", *args], env=e, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_compile_cache_is_created_private_and_filled(tmp_path):
    r = _funcnn(tmp_path, "train", str(CONFIGS / "two_lines.toml"), "--out", str(tmp_path / "run"), "--quiet",
                "--set", "training.epochs=1", "--set", "output.plots=false", xdg=False)
    assert r.returncode == 0, r.stderr
    cache = tmp_path / "home" / ".cache" / "funcnn" / "jax"  # no XDG_CACHE_HOME: ~/.cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700 and stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert any(cache.iterdir()), "the run wrote no compiled program"


def test_compile_cache_refuses_a_directory_others_can_write(tmp_path):
    cache = tmp_path / "xdg" / "funcnn" / "jax"
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    r = _funcnn(tmp_path, "evaluate", "missing.ckpt")
    assert r.returncode == 2, r.stderr
    assert "not using the compilation cache" in r.stderr and "writable by others" in r.stderr
    assert not any(cache.iterdir())


@pytest.mark.parametrize("how", ["flag", "env"])
def test_compile_cache_can_be_turned_off(tmp_path, how):
    r = _funcnn(tmp_path, "evaluate", "missing.ckpt", *(["--no-compile-cache"] if how == "flag" else []),
                **({"FUNCNN_NO_COMPILE_CACHE": "1"} if how == "env" else {}))
    assert r.returncode == 2, r.stderr
    assert "compilation cache" not in r.stderr and not (tmp_path / "xdg" / "funcnn").exists()
