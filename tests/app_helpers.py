"""One tiny digits run shared by the app tests (playground, mistakes): trained once per test process.

Four epochs of a 64-32-10 ReLU MLP (under 2 s on 2 CPU cores) learn enough
for the predictions to be meaningful; the tests never depend on its accuracy.
Plots are on (when matplotlib is installed), so the run also holds what train writes.
"""
import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def digits_run() -> Path:
    """The run directory of a quick ``funcnn train configs/digits.toml`` (config.json, best.ckpt, ...).

    Trained by the command in a subprocess, as a user runs it, so the app tests also check what
    ``funcnn train`` writes (mistakes.png and confusion.png for an image classifier).
    """
    root = Path(tempfile.mkdtemp(prefix="funcnn-app-test-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    run = root / "digits-tiny"
    done = run_cli("train", REPO / "configs" / "digits.toml", "--out", run, "--quiet",
                   "--set", "model.sizes=[64,32,10]", "--set", "training.epochs=4", "--set", "output.gradcheck=false")
    assert done.returncode == 0, f"training the shared test run failed ({done.returncode}): {done.stderr}"
    return run


REPO = Path(__file__).resolve().parent.parent


def cli_env() -> dict:
    """The environment for ``python -m funcnn`` subprocesses: this checkout first on the path."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_cli(*args, timeout: float = 120):
    """``python -m funcnn ARGS`` in a subprocess: the CompletedProcess (text stdout and stderr)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "funcnn", *map(str, args)], capture_output=True, text=True,
                          env=cli_env(), timeout=timeout)
