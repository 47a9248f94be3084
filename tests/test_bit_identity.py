"""funcnn.mlp gives exactly what funcnn 0.1 gave: users' saved runs and published numbers must not move.

The digests below were computed by funcnn 0.1 (commit 7708ae7, before the
layer contract) on jax 0.10.2, x86-64 CPU: SHA-256 (first 16 hex digits) of
the parameters after ``init``, of ``apply``, ``loss``, ``value_and_grad``
(eager and jitted), ``jax.grad(loss_manual_vjp)`` (jitted) and of the
parameters after two epochs of ``train.fit`` with Adam, plus those epochs'
losses as float hex, with ``jax_enable_x64`` on as in this suite (funcnn 0.1
and this code also agree bit for bit with it off: dropout masks differ
between the two modes, so the digests are per mode). Bit-identity is a property of one XLA build: on another
jax version the float rounding of the compiled programs may legitimately
differ, so there the test is skipped with that reason (CI installs the
version pinned as the lower bound, 0.10.2, while it is the newest).

The compiled HLO of a two-layer MLP's value_and_grad and train step must not
grow either (193 and 227 instructions in 0.1).
"""
import hashlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn
from funcnn import data, optim, train

RECORDED_WITH = "0.10.2"
pytestmark = pytest.mark.skipif(jax.__version__ != RECORDED_WITH,
                                reason=f"digests recorded with jax {RECORDED_WITH}; XLA rounding may differ "
                                       f"in jax {jax.__version__}")

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
V01 = {
    "digits_relu": {"init": "6a99e1ddf0441390", "apply": "a5c4e7e68346a1a4", "loss": "fcdeeb209a41893a", "grad_eager": "48b7956c4492752d", "grad_jit": "48b7956c4492752d", "vjp_jit": "0a3b5873336127c4", "fit2": "68a16309a8ceab74", "fit2_loss": ["0x1.199677e4b17e5p+1", "0x1.ef881d258bf26p+0"]},
    "deep_tanh_l2_dropout_same": {"init": "260631e1d0bd420a", "apply": "406c6cf63c1f697a", "loss": "66c9cbfd3972b75c", "grad_eager": "8727bc4d26f72f8d", "grad_jit": "208f372550a4114a", "vjp_jit": "1bcaec416017d992", "fit2": "3018c07b650c92e0", "fit2_loss": ["0x1.2e0bbf4e81b4fp+1", "0x1.2b331a2222222p+1"]},
    "sigmoid_bce_gelu": {"init": "b7eda420d51a661d", "apply": "062ff58bc373a157", "loss": "0f76dca2bbfbeba8", "grad_eager": "69810ee936972e17", "grad_jit": "c92406b84e893fe6", "vjp_jit": "dbc6b0e6e336b23f", "fit2": "6d581892a7475555", "fit2_loss": ["0x1.dd4b38e81b4e8p+2", "0x1.adf351b4e81b5p+2"]},
    "identity_mse_elu": {"init": "3a31f34894e422f6", "apply": "53390a2c3a3e290f", "loss": "c234bfe312920bf1", "grad_eager": "f177d43a32019e03", "grad_jit": "f177d43a32019e03", "vjp_jit": "ee727acee4d752f2", "fit2": "9275216297058487", "fit2_loss": ["0x1.a470c962fc963p+0", "0x1.24911340da741p+0"]},
    "bf16_relu": {"init": "943fc9129eb3140f", "apply": "4fa73155b8d69ded", "loss": "54bde43207acbfcc", "grad_eager": "e81ea17c8f9b11cd", "grad_jit": "0fe75dc372d127b8", "vjp_jit": "d00b6de95fc8bdb2", "fit2": "cbf5f165c9f519b2", "fit2_loss": ["0x1.2b01cee147ae1p+1", "0x1.177f715555555p+1"]},
    "linear": {"init": "e011586ff4ea3de1", "apply": "ec0008d477cffcc9", "loss": "583ad32d86e018e4", "grad_eager": "be0c775d302e3cd8", "grad_jit": "be0c775d302e3cd8", "vjp_jit": "89e25ff70f08074c", "fit2": "2a738cabffd72f0b", "fit2_loss": ["0x1.3e6a7d258bf26p+1", "0x1.31c835d0369d0p+1"]},
}


def digest(tree):
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)
        h.update(a.dtype.str.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def digits300():
    x, y = data.load_digits()
    return x[:300], y[:300]


@pytest.mark.parametrize("name", list(CASES))
def test_mlp_results_are_bit_identical_to_funcnn_0_1(name, digits300):
    x, y = digits300
    c, want = CASES[name], V01[name]
    net = funcnn.mlp(c["sizes"], **c["kw"])
    p = net.init(jax.random.key(3))
    yy = y if net.criterion.labels else data.one_hot(y, 10)
    key = jax.random.key(5)
    got = {"init": digest(p), "apply": digest(net.apply(p, x)), "loss": digest(net.loss(p, x, yy, key=key)),
           "grad_eager": digest(net.value_and_grad(p, x, yy, key=key)),
           "grad_jit": digest(jax.jit(lambda p: net.value_and_grad(p, x, yy, key=key))(p)),
           "vjp_jit": digest(jax.jit(jax.grad(lambda p: net.loss_manual_vjp(p, x, yy, key=key)))(p))}
    state, hist = train.fit(net, optim.adam(1e-3), (x, yy), epochs=2, batch_size=32, key=jax.random.key(7))
    got["fit2"] = digest(state.params)
    got["fit2_loss"] = [float(v).hex() for v in hist.train_loss]
    assert got == want


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
