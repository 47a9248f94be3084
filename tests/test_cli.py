"""The funcnn command, driven in-process through funcnn.cli.main."""
import json
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
