"""Issue 11: the CLI never loses or corrupts a user's results, and every user error is one line.

Runs are small (digits with a 16-unit hidden layer, a few epochs) and shared
through module-scoped fixtures: the whole file stays within seconds.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from funcnn import _files, checkpoint, cli, data, experiment, train

CONFIGS = Path(__file__).parents[1] / "configs"
ROOT = Path(__file__).parents[1]
# Digits, small and fast; with early stopping this stops at epoch 7 of 30 (patience 2).
SMALL = ["model.sizes=[64,16,10]", "data.augment=false", "output.plots=false", "output.gradcheck=false",
         "optimizer.learning_rate=0.05", "training.batch_size=128", "data.val_size=0.15"]
EARLY = SMALL + ["training.epochs=30", "training.early_stopping=2"]


def _train(out, sets, config="digits"):
    args = ["train", str(CONFIGS / f"{config}.toml"), "--out", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    return cli.main(args)


def _snapshot(run: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.iterdir())}


@pytest.fixture(scope="module")
def early_run(tmp_path_factory):
    """A finished digits run that stopped early."""
    run = tmp_path_factory.mktemp("early") / "run"
    assert _train(run, EARLY) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) < 30  # it did stop early
    return run


def _one_line_error(capsys, code, expected_code=2, *match):
    full = capsys.readouterr().err.strip()
    assert code == expected_code, full
    # Progress lines ("loading the two_lines data...") may come first; then exactly one error line.
    lines = [line for line in full.splitlines() if not line.endswith("...")]
    err = lines[-1] if lines else ""
    assert len(lines) == 1 and err.startswith("funcnn: error:") and "Traceback" not in full, full
    for m in match:
        assert m in err, err
    return err


# ------------------------------------------------------------------ 1, 2: resume


def test_resume_of_a_finished_run_changes_nothing(early_run, capsys):
    before = _snapshot(early_run)
    assert cli.main(["resume", str(early_run), "--quiet"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert _snapshot(early_run) == before


def _same_checkpoint(a: Path, b: Path):
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    for u, v in zip(jax.tree.leaves((ca.params, ca.opt_state_leaves, ca.step)),
                    jax.tree.leaves((cb.params, cb.opt_state_leaves, cb.step)), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v), strict=True)
    ea, eb = dict(ca.extra), dict(cb.extra)
    ea.pop("seconds", None), eb.pop("seconds", None)  # wall time: the one thing that differs
    assert ea == eb and ca.config == cb.config


class _Kill:
    """Stops a run at epoch ``at`` (0-based): right after its checkpoints, or while last.ckpt is written."""

    def __init__(self, monkeypatch, at, where):
        real_save, real_update = checkpoint.save, cli._Progress.update

        def save(path, state, **kw):  # a kill while last.ckpt is written: best.ckpt is new, last.ckpt old
            if Path(path).name == "last.ckpt" and kw["extra"]["epoch"] == at:
                raise KeyboardInterrupt
            return real_save(path, state, **kw)

        def update(self, epoch, m):  # Ctrl-C right after an epoch's checkpoints
            real_update(self, epoch, m)
            if epoch == at:
                raise KeyboardInterrupt

        if where == "saving":
            monkeypatch.setattr(checkpoint, "save", save)
        else:
            monkeypatch.setattr(cli._Progress, "update", update)


def test_resume_with_early_stopping_is_exact_whatever_the_kill_point(early_run, tmp_path, monkeypatch, capsys):
    # Killed after epoch 1; resumed and killed while epoch 5's last.ckpt is written (epoch 5 is a
    # new best: best.ckpt is already new); resumed and killed after epoch 6 (not a best: the
    # patience used must carry over, or the run stops later); resumed to the end.
    cut = tmp_path / "cut"
    _Kill(monkeypatch, 0, "after")
    assert _train(cut, EARLY) == 130
    assert "interrupted at epoch 2 of 30; continue with `funcnn resume" in capsys.readouterr().err
    for at, where in ((4, "saving"), (5, "after")):
        monkeypatch.undo()
        _Kill(monkeypatch, at, where)
        assert cli.main(["resume", str(cut), "--quiet"]) == 130
    monkeypatch.undo()
    assert not (cut / "final.ckpt").exists()
    assert cli.main(["resume", str(cut), "--quiet"]) == 0
    assert (cut / "metrics.jsonl").read_bytes() == (early_run / "metrics.jsonl").read_bytes()
    for name in ("best.ckpt", "final.ckpt", "last.ckpt"):
        _same_checkpoint(early_run / name, cut / name)


@pytest.mark.parametrize("early_stopping", [2, None])
def test_fit_in_two_calls_equals_one_call(early_stopping):
    """The API behind resume: fit(a epochs), then fit(b more, best=history.best) is fit(a + b)."""
    import funcnn
    from funcnn import optim

    x, y = data.load_digits()
    net, opt = funcnn.mlp([64, 8, 10]), optim.sgd(0.5)
    kw = dict(batch_size=100, validation=(x[200:400], y[200:400]), early_stopping=early_stopping,
              key=jax.random.key(0))
    s1, h1 = train.fit(net, opt, (x[:200], y[:200]), epochs=12, **kw)
    seen = []
    _, ha = train.fit(net, opt, (x[:200], y[:200]), epochs=3, callback=lambda e, m, s: seen.append(s), **kw)
    assert not ha.stopped_early and ha.best is not None
    s2, h2 = train.fit(net, opt, (x[:200], y[:200]), epochs=9, state=seen[-1], best=ha.best, first_epoch=3, **kw)
    assert (h2.best_epoch, h2.stopped_early) == (h1.best_epoch, h1.stopped_early)
    assert ha.train_loss + h2.train_loss == h1.train_loss
    for u, v in zip(jax.tree.leaves(s1), jax.tree.leaves(s2), strict=True):
        if jax.dtypes.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# ------------------------------------------------------------------ 3, 4, 10, 11: predict


def test_predict_never_overwrites_and_writes_exactly_the_path(early_run, tmp_path, capsys):
    ck = str(early_run / "final.ckpt")
    x = np.asarray(data.load_digits()[0][:5])
    np.save(tmp_path / "x.npy", x)
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    inp = str(tmp_path / "x.npy")
    _one_line_error(capsys, cli.main(["predict", ck, inp, "--out", str(precious)]), 2, "--force")
    assert precious.read_text() == "mine"
    _one_line_error(capsys, cli.main(["predict", ck, inp, "--out", inp, "--force"]), 2, "inputs")
    _one_line_error(capsys, cli.main(["predict", ck, inp, "--out", str(tmp_path)]), 2, "is a directory")
    assert not (tmp_path.parent / f"{tmp_path.name}.npy").exists()
    assert cli.main(["predict", ck, inp, "--out", str(tmp_path / "p")]) == 0  # exactly "p": no ".npy" added
    assert np.load(tmp_path / "p", allow_pickle=False).shape == (5, 10) and not (tmp_path / "p.npy").exists()
    assert cli.main(["predict", ck, inp, "--out", str(precious), "--force"]) == 0
    assert np.load(precious, allow_pickle=False).shape == (5, 10)


def test_checkpoint_predict_on_raw_inputs_is_what_funcnn_predict_prints(early_run, tmp_path, capsys):
    x, y = data.load_digits()
    np.save(tmp_path / "x.npy", np.asarray(x))
    capsys.readouterr()
    assert cli.main(["predict", str(early_run / "final.ckpt"), str(tmp_path / "x.npy"), "--labels"]) == 0
    printed = np.array(capsys.readouterr().out.split(), int)
    ck = checkpoint.load(early_run / "final.ckpt")
    np.testing.assert_array_equal(np.asarray(ck.predict(x)), printed)
    assert np.mean(printed == np.asarray(y)) > 0.9
    # The network alone on raw pixels is the old trap: it is not what the run predicts.
    assert np.mean(np.asarray(ck.net.predict(ck.params, x)) == printed) < 0.95


def test_predict_csv_needs_a_header_and_keeps_every_row(early_run, tmp_path, capsys):
    x = np.asarray(data.load_digits()[0][:4])
    body = "\n".join(",".join(f"{v:g}" for v in row) for row in x) + "\n"
    (tmp_path / "none.csv").write_text(body)
    (tmp_path / "head.csv").write_text(",".join(f"p{i}" for i in range(64)) + "\n" + body)
    ck = str(early_run / "final.ckpt")
    _one_line_error(capsys, cli.main(["predict", ck, str(tmp_path / "none.csv")]), 2, "header", "none.csv")
    assert cli.main(["predict", ck, str(tmp_path / "head.csv"), "--labels"]) == 0
    assert len(capsys.readouterr().out.split()) == 4
    with pytest.raises(ValueError, match="no header"):
        data.load_csv(tmp_path / "none.csv", target="0")  # the same rule everywhere


@pytest.mark.parametrize("array, match", [
    (np.ones((2, 64), np.complex64), "complex"),
    (np.array([["a"] * 64]), "must hold numbers"),
    (np.zeros((0, 64), np.float32), "empty"),
])
def test_predict_refuses_complex_string_and_empty_inputs(early_run, tmp_path, capsys, array, match):
    np.save(tmp_path / "x.npy", array)
    code = cli.main(["predict", str(early_run / "final.ckpt"), str(tmp_path / "x.npy")])
    _one_line_error(capsys, code, 2, match, "x.npy")


# ------------------------------------------------------------------ 6, 7: evaluate


def test_evaluate_never_reads_a_path_stored_in_the_checkpoint(early_run, tmp_path, capsys):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    ck = checkpoint.load(early_run / "final.ckpt")
    cfg = dict(ck.config, data=dict(ck.config["data"], name="csv", path=str(secret), target="label"))
    bad = checkpoint.save(tmp_path / "crafted.ckpt", checkpoint.restore_state(ck, _opt(ck)), spec=ck.spec,
                          config=cfg, extra=ck.extra)
    err = _one_line_error(capsys, cli.main(["evaluate", str(bad)]), 2, "--data", "--run-data")
    err2 = _one_line_error(capsys, cli.main(["evaluate", str(bad), "--run-data"]), 2, "shadow")
    assert "secret" not in err.replace(str(secret), "") and "root" not in err2.replace(str(secret), "")


def _opt(ck):
    from funcnn import config as cfglib

    cfg = cfglib.config_from_dict(ck.config)
    return experiment.build(cfg, 1000)[1]


def test_labels_out_of_range_are_refused_before_evaluation(early_run, tmp_path, capsys):
    x, y = data.load_digits()
    y = np.asarray(y).copy()
    y[:3] = 12
    np.savez(tmp_path / "d.npz", x=np.asarray(x), y=y)
    _one_line_error(capsys, cli.main(["evaluate", str(early_run / "final.ckpt"), "--data", str(tmp_path / "d.npz")]),
                    2, "[0, 10)")
    ck = checkpoint.load(early_run / "final.ckpt")
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        train.evaluate(ck.net, ck.params, ck.preprocess(x), y)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        experiment.evaluate_split(ck.net, ck.params, ck.preprocess(x), y)


# ------------------------------------------------------------------ 8: float64 is float64


def test_float64_run_trains_in_float64(tmp_path):
    # A subprocess: the test session already has 64-bit JAX on.
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "funcnn", "train", str(CONFIGS / "two_lines.toml"), "--out",
                           str(out), "--quiet", "--set", "training.dtype=float64", "--set", "training.epochs=1",
                           "--set", "output.plots=false", "--set", "output.gradcheck=false"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert proc.returncode == 0 and "float32" not in proc.stderr, proc.stderr
    assert json.loads((out / "config.json").read_text())["training"]["dtype"] == "float64"
    assert all(a.dtype == np.float64 for a in jax.tree.leaves(checkpoint.load(out / "final.ckpt").params))


# ------------------------------------------------------------------ 9: one process per run directory


def test_a_run_directory_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "last.ckpt", "metrics.jsonl"):
        (run / name).write_text("{}")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (run / _files.LOCK_NAME).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        _one_line_error(capsys, cli.main(["resume", str(run)]), 2, f"process {sleeper.pid}", "in use")
    finally:
        sleeper.kill()
        sleeper.wait()
    with _files.run_lock(run):  # its process is gone: stale, taken over
        assert (run / _files.LOCK_NAME).read_text().startswith(f"{os.getpid()} ")
    assert not (run / _files.LOCK_NAME).exists()


# ------------------------------------------------------------------ 12: divergence


def test_divergence_saves_the_last_finite_state_and_says_where(tmp_path, capsys):
    run = tmp_path / "run"
    code = _train(run, ["training.epochs=3", "optimizer.name=sgd", "optimizer.learning_rate=1e6",
                        "optimizer.schedule=constant",
                        "output.plots=false", "output.gradcheck=false"], config="sine")
    err = _one_line_error(capsys, code, 1, "epoch 1 of 3", str(run / "diverged.ckpt"))
    ck = checkpoint.load(run / "diverged.ckpt")
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(ck.params))
    assert f"global step {int(ck.step)}" in err
    before = _snapshot(run)
    assert cli.main(["resume", str(run)]) == 0 and "diverged" in capsys.readouterr().out
    assert _snapshot(run) == before


# ------------------------------------------------------------------ one line, never a traceback


def _write(path, content: bytes):
    path.write_bytes(content)
    return str(path)


def test_user_errors_are_one_line(early_run, tmp_path, capsys, monkeypatch):
    ck = str(early_run / "final.ckpt")
    two = str(CONFIGS / "two_lines.toml")
    cases = [
        (["train", str(CONFIGS)], "no config file"),
        (["train", _write(tmp_path / "latin1.toml", "[model]\nhidden = 'caf\xe9'\n".encode("latin-1"))],
         "not UTF-8"),
        (["train", two, "--out", _write(tmp_path / "afile", b"x") + "/run"], "afile"),
        (["gradcheck", two, "--max-entries", "-5"], "--max-entries"),
        (["predict", _write(tmp_path / "notes.ckpt", b"just text\n"), ck], "not a zip"),
        (["predict", ck, _write(tmp_path / "latin1.csv", "caf\xe9,b\n1,2\n".encode("latin-1"))], "not UTF-8"),
        (["train", two, "--set", "training.batch_size=100000", "--out", str(tmp_path / "big")], "batch_size"),
    ]
    if Path("/proc/self/mem").exists():
        cases.append((["train", "/proc/self/mem"], "/proc/self/mem"))
    for argv, match in cases:
        _one_line_error(capsys, cli.main(argv), 2, match)
    assert not (tmp_path / "big").exists()  # bad data is found before the run directory is made


def test_corrupt_config_json_at_resume_is_one_line(early_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.ckpt", "metrics.jsonl"):
        (run / name).write_bytes((early_run / name).read_bytes())
    (run / "config.json").write_text('{"model": ')
    _one_line_error(capsys, cli.main(["resume", str(run)]), 2, "config.json", "not valid")


def test_a_full_disk_while_saving_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    def full(f, members):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_npz", full)
    code = _train(tmp_path / "run", ["training.epochs=1", "output.plots=false", "output.gradcheck=false"],
                  config="two_lines")
    _one_line_error(capsys, code, 2, "No space left on device", "last.ckpt")
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_a_bug_keeps_its_traceback(monkeypatch):
    def bug(cfg):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(experiment, "load_split", bug)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["train", str(CONFIGS / "two_lines.toml")])


def test_one_line_through_the_real_command(tmp_path):
    """The console entry point itself: one line on stderr, exit 2, no traceback."""
    np.save(tmp_path / "c.npy", np.ones((1, 2), np.complex64))
    proc = subprocess.run([sys.executable, "-m", "funcnn", "gradcheck", str(CONFIGS / "two_lines.toml"),
                           "--dtype", "float16"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("funcnn: error:") and "float16" in proc.stderr


# ------------------------------------------------------------------ smaller items


def test_stale_temp_files_are_removed_at_resume_and_modes_are_one(early_run, tmp_path, monkeypatch):
    cut = tmp_path / "cut"
    _Kill(monkeypatch, 0, "after")
    assert _train(cut, EARLY[:-2] + ["training.epochs=2"]) == 130
    monkeypatch.undo()
    stale = cut / ".last.ckpt.0123456789ab.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert cli.main(["resume", str(cut), "--quiet"]) == 0
    assert not stale.exists()
    modes = {p.name: p.stat().st_mode & 0o777 for p in cut.iterdir()}
    assert len(set(modes.values())) == 1, modes


@pytest.mark.parametrize("key", [3, "k", np.ones(2, np.float32)])
def test_keys_that_are_not_prng_keys_are_a_clear_error(key):
    import funcnn
    from funcnn import optim

    net = funcnn.mlp([2, 3, 2])
    with pytest.raises(TypeError, match="key must be a single jax.random key"):
        net.init(key)
    with pytest.raises(TypeError, match="key must be a single jax.random key"):
        train.fit(net, optim.sgd(0.1), (np.ones((4, 2), np.float32), np.zeros(4, int)), epochs=1, batch_size=2,
                  key=key)


def test_fit_refuses_strings_and_a_state_of_another_optimizer():
    import funcnn
    from funcnn import optim

    net, x, y = funcnn.mlp([2, 3, 2]), np.ones((4, 2), np.float32), np.zeros(4, int)
    with pytest.raises(TypeError, match="data x must hold numbers"):
        train.fit(net, optim.sgd(0.1), (np.array([["a", "b"]] * 4), y), epochs=1, batch_size=2,
                  key=jax.random.key(0))
    adam_state = train.init_state(net, optim.adam(0.1), key=jax.random.key(0))
    with pytest.raises(ValueError, match="made by a different optimizer"):
        train.fit(net, optim.sgd(0.1), (x, y), epochs=1, batch_size=2, state=adam_state)
