"""funcnn.mlp gives exactly what funcnn 0.1 gave: users' saved runs and published numbers must not move.

The reference is funcnn 0.1 itself (commit 7708ae7, before the layer
contract), taken out of this checkout's git history with ``git archive`` and
run in a subprocess on this machine, this jax and this CPU: bit-identity is a
property of one XLA build and one instruction set (the same jax gives other
float roundings on an AVX-512 Intel and an AMD EPYC), so digests recorded on
one machine cannot prove it on another. Both versions run the same script
(``_DIGESTS``, below), which hashes (SHA-256, first 16 hex digits) the
parameters after ``init``, ``apply``, ``loss``, ``value_and_grad`` (eager and
jitted), ``jax.grad(loss_manual_vjp)`` (jitted) and the parameters after two
epochs of ``train.fit`` with Adam, plus those epochs' losses as float hex,
with ``jax_enable_x64`` on as in this suite. Without the commit (a shallow
clone, a tarball) the test is skipped with that reason.

The compiled HLO of a two-layer MLP's value_and_grad and train step must not
grow either (193 and 227 instructions in 0.1).
"""
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import funcnn
from funcnn import optim, train

ROOT = Path(__file__).resolve().parent.parent
V01_COMMIT = "7708ae7"
CASES = ["digits_relu", "deep_tanh_l2_dropout_same", "sigmoid_bce_gelu", "identity_mse_elu", "bf16_relu", "linear"]

# Run by both versions, each in its own process (python -c), so both import and
# compile under the same conditions. Uses only API that 0.1 had.
_DIGESTS = """
import hashlib, json, os, sys
import jax, numpy as np
if os.environ.get("DIGEST_CACHE"):  # shared by both runs: the second loads the programs the first compiled
    jax.config.update("jax_compilation_cache_dir", os.environ["DIGEST_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
import funcnn
from funcnn import data, optim, train

CASES = {
    "digits_relu": dict(sizes=[64, 128, 10], kw=dict(hidden="relu")),
    "deep_tanh_l2_dropout_same": dict(sizes=[64, 32, 16, 10], kw=dict(
        hidden="tanh", l2=0.3, dropout=0.2, bias_init="same", init=funcnn.initializers.uniform(0.12))),
    "sigmoid_bce_gelu": dict(sizes=[64, 20, 10], kw=dict(hidden="gelu", output="sigmoid",
                                                         loss="binary_cross_entropy", l2=0.1, init="he_normal")),
    "identity_mse_elu": dict(sizes=[64, 7, 10], kw=dict(hidden="elu", output="identity", loss="mse",
                                                        init="xavier_uniform")),
    "bf16_relu": dict(sizes=[64, 48, 10], kw=dict(hidden="relu", precision="bfloat16")),
    "linear": dict(sizes=[64, 10], kw=dict()),
}

def digest(tree):
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)
        h.update(a.dtype.str.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]

x, y = data.load_digits()
x, y = x[:300], y[:300]
out = {}
for name, c in CASES.items():
    net = funcnn.mlp(c["sizes"], **c["kw"])
    p = net.init(jax.random.key(3))
    yy = y if net.spec.loss == "cross_entropy" else data.one_hot(y, 10)
    key = jax.random.key(5)
    got = {"init": digest(p), "apply": digest(net.apply(p, x)), "loss": digest(net.loss(p, x, yy, key=key)),
           "grad_eager": digest(net.value_and_grad(p, x, yy, key=key)),
           "grad_jit": digest(jax.jit(lambda p: net.value_and_grad(p, x, yy, key=key))(p)),
           "vjp_jit": digest(jax.jit(jax.grad(lambda p: net.loss_manual_vjp(p, x, yy, key=key)))(p))}
    state, hist = train.fit(net, optim.adam(1e-3), (x, yy), epochs=2, batch_size=32, key=jax.random.key(7))
    got["fit2"] = digest(state.params)
    got["fit2_loss"] = [float(v).hex() for v in hist.train_loss]
    out[name] = got
json.dump(out, sys.stdout)
"""


def _digests(pythonpath: Path, cache: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", _DIGESTS], capture_output=True, text=True, timeout=600,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath), "JAX_PLATFORMS": "cpu",
                            "DIGEST_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """``(funcnn 0.1's digests, this checkout's)``, each from a fresh process on this machine."""
    old = tmp_path_factory.mktemp("funcnn_0_1")
    # FUNCNN_HISTORY: a checkout whose git history holds 0.1, for copies without one (scripts/mutate.py).
    history = os.environ.get("FUNCNN_HISTORY", str(ROOT))
    r = subprocess.run(["git", "-C", history, "archive", "--format=tar", V01_COMMIT, "funcnn"],
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip(f"funcnn 0.1 (commit {V01_COMMIT}) is not in this checkout's git history: "
                    f"{r.stderr.decode().strip()[:200]}")
    (old / "v01.tar").write_bytes(r.stdout)
    with tarfile.open(old / "v01.tar") as tar:
        tar.extractall(old, filter="data")
    # 0.1 compiles (~35 s cold here), this checkout loads (~8 s); in the suite's own cache
    # (tests/conftest.py), a second run of the suite loads both.
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or tmp_path_factory.mktemp("jax_cache")
    return _digests(old, cache), _digests(ROOT, cache)


@pytest.mark.parametrize("name", CASES)
def test_mlp_results_are_bit_identical_to_funcnn_0_1(name, both):
    v01, now = both
    assert set(v01) == set(CASES)
    assert now[name] == v01[name]


def _hlo_instructions(f, *args) -> int:
    text = jax.jit(f).lower(*args).compile().as_text()
    return sum(bool(re.match(r"\s+(ROOT )?%?[\w.\-]+ = ", line)) for line in text.splitlines())


def test_compiled_step_does_not_grow():
    net = funcnn.mlp([64, 128, 10])
    p = net.init(jax.random.key(0))
    x, y = jnp.ones((32, 64), jnp.float32), jnp.zeros((32,), jnp.int32)
    assert _hlo_instructions(net.value_and_grad, p, x, y) <= 193
    state = train.init_state(net, optim.sgd(0.1), key=jax.random.key(0))
    step = train.make_train_step(net, optim.sgd(0.1))
    assert _hlo_instructions(lambda s, a, b: step(s, a, b), state, x, y) <= 227


def test_network_spelling_compiles_to_the_same_program_as_mlp():
    net = funcnn.mlp([64, 128, 10])
    spelled = funcnn.network([funcnn.layers.dense(128, "relu"), funcnn.layers.dense(10)], input_size=64)
    p = net.init(jax.random.key(0))
    x, y = jnp.ones((32, 64), jnp.float32), jnp.zeros((32,), jnp.int32)
    assert _hlo_instructions(spelled.value_and_grad, p, x, y) == _hlo_instructions(net.value_and_grad, p, x, y)
