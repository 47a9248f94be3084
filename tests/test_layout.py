"""The package layout is the architecture: the library never reaches the application layer.

Each check runs in a fresh interpreter, so modules imported by other tests
cannot hide an import.
"""
import subprocess
import sys

import pytest

LIBRARY_USE = """
import sys, tempfile, os
import jax
import funcnn
from funcnn import checkpoint, data, optim, train
net = funcnn.mlp([4, 3, 2])
state = train.init_state(net, optim.adam(1e-3), key=jax.random.key(0))
with tempfile.TemporaryDirectory() as d:
    checkpoint.save(os.path.join(d, "a.ckpt"), state, spec=net.spec)
    checkpoint.load(os.path.join(d, "a.ckpt"))
app = sorted(m for m in sys.modules if m.startswith("funcnn.app") or m in
             ("funcnn.config", "funcnn.experiment", "funcnn.cli", "funcnn.plots"))
print(app)
"""


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_library_never_imports_the_application_layer():
    # Saving and loading a checkpoint once pulled in the config (through funcnn.__version__).
    assert _run(LIBRARY_USE) == "[]"


@pytest.mark.parametrize("old, new", [
    ("funcnn.schedules", "funcnn.optim.schedules"),
    ("funcnn.lbfgs", "funcnn.optim.lbfgs"),
    ("funcnn.hessian_free", "funcnn.optim.newton"),
    ("funcnn.datasets", "funcnn.data.generated"),
    ("funcnn.readers", "funcnn.data.readers"),
    ("funcnn.config", "funcnn.app.config"),
    ("funcnn.experiment", "funcnn.app.experiment"),
    ("funcnn.cli", "funcnn.app.cli"),
    ("funcnn.plots", "funcnn.app.plots"),
])
def test_old_module_paths_are_the_new_modules(old, new):
    import importlib

    assert importlib.import_module(old) is importlib.import_module(new)


def test_public_names_keep_their_paths():
    import funcnn
    from funcnn import optim, schedules

    assert set(schedules.__all__) <= set(optim.__all__)
    assert all(hasattr(optim, n) for n in optim.__all__)
    assert callable(optim.hessian_free) and callable(optim.adam) and callable(optim.lbfgs_minimize)
    assert callable(funcnn.data.load_digits) and callable(funcnn.data.make_moons)
    assert callable(funcnn.data.load_csv)
    assert funcnn.config.Config is funcnn.app.config.Config  # loaded on first use
