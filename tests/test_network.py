"""Networks of any layers: the hand-derived gradient equals jax.grad of an independently written loss.

The reference (``tests/reference.py::reference_network_loss``) is the
textbook forward pass in plain jnp; ``jax.grad`` of it never runs funcnn code.
Architectures mix dense layers with different activations per layer, layer
norm and residual blocks; each is checked with every (output, loss) pair,
batch 1 and 7, L2 on (which reaches the weights inside residual blocks too).

Tolerances (normwise per leaf): float64 1e-10; float32 1e-4.

Cotangents other than 1: ``jax.vjp(net.loss_manual_vjp, params, x, y)``
pulled back along 2.5 must equal the reference's pullback along 2.5 for the
params, x and float targets (a backward that forgot the incoming cotangent
``g`` in the L2 term, in dx or in the target cotangent passes every
``jax.grad`` test, since ``jax.grad`` always pulls back exactly 1).
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import PAIRS, funcnn_layers, normwise_rel_err, random_problem, record, reference_network_loss

import funcnn
from funcnn import layers

ARCHS = {
    "dense-per-layer-activations": [("dense", 5, "relu"), ("dense", 4, "tanh"), ("dense", 3, None)],
    "layer-norm": [("dense", 6, "gelu"), ("layer_norm", 1e-5), ("dense", 3, None)],
    "residual": [("dense", 5, "elu"), ("residual", [("dense", 5, "tanh"), ("layer_norm", 1e-3)]),
                 ("residual", [("dense", 4, "softplus"), ("dense", 5, None)]), ("dense", 3, None)],
    "width-1": [("dense", 1, "sigmoid"), ("layer_norm", 1e-5), ("dense", 3, None)],
}
D_IN, M, L2 = 4, 3, 0.3


def _params(net, dtype, seed):
    params = net.init(jax.random.key(seed), dtype=dtype)
    rng = np.random.default_rng(seed)
    # perturb gains and biases away from 1 and 0 so every term of the backward matters
    return jax.tree.map(lambda a: a + jnp.asarray(0.2 * rng.normal(size=a.shape), dtype), params)


def _targets(output, loss, batch, dtype, seed):
    return random_problem([D_IN, M], output, loss, batch, dtype, seed=seed)[2]


@pytest.fixture(scope="module", params=list(ARCHS), ids=list(ARCHS))
def arch_case(request):
    arch = ARCHS[request.param]
    nets = {(o, l): funcnn.network(funcnn_layers(arch), input_size=D_IN, output=o, loss=l, l2=L2)
            for o, l in PAIRS}
    return arch, nets


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
def test_network_grad_matches_autodiff_of_plain_reference(arch_case, dtype):
    arch, nets = arch_case
    tol = {jnp.float64: 1e-10, jnp.float32: 1e-4}[dtype]
    any_net = next(iter(nets.values()))
    for batch in (1, 7):
        params = _params(any_net, dtype, batch)
        x = jnp.asarray(np.random.default_rng(batch).normal(size=(batch, D_IN)), dtype)
        ys = {pair: _targets(*pair, batch, dtype, batch) for pair in nets}

        @jax.jit
        def all_pairs(params, x, ys):
            out = {}
            for (o, l), net in nets.items():
                y = ys[(o, l)]
                ref = lambda p, y=y, o=o, l=l: reference_network_loss(arch, p, x, y, output=o, loss=l, l2=L2)
                out[(o, l)] = (net.value_and_grad(params, x, y), jax.value_and_grad(ref)(params),
                               jax.grad(net.loss_manual_vjp)(params, x, y))
            return out

        for pair, ((v, g), (rv, rg), gv) in all_pairs(params, x, ys).items():
            chex.assert_trees_all_equal_structs(g, params)
            chex.assert_trees_all_equal_dtypes(g, params)
            err = normwise_rel_err(g, rg)
            record("network manual vs jax.grad(ref)", dtype, err)
            assert err <= tol, (pair, batch, err)
            np.testing.assert_allclose(float(v), float(rv), rtol=tol)
            assert normwise_rel_err(gv, g) <= tol, pair  # jax.grad(loss_manual_vjp) runs the same backward


def test_network_grad_eager_equals_jitted(arch_case):
    arch, nets = arch_case
    net = nets[("softmax", "cross_entropy")]
    params = _params(net, jnp.float64, 3)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(7, D_IN)))
    y = jnp.array([0, 1, 2, 0, 1, 2, 2])
    ref = jax.grad(lambda p: reference_network_loss(arch, p, x, y, output="softmax", loss="cross_entropy",
                                                    l2=L2))(params)
    assert normwise_rel_err(net.grad(params, x, y), ref) <= 1e-10


@pytest.mark.parametrize("output,loss", [p for p in PAIRS if p[1] != "cross_entropy"] + [("softmax", "cross_entropy")])
@pytest.mark.parametrize("which", ["mlp", "residual"])
def test_vjp_with_a_cotangent_other_than_one(which, output, loss):
    # Float targets throughout (soft rows for cross entropy), so the target cotangent is checked too.
    if which == "mlp":
        arch = [("dense", 5, "tanh"), ("dense", 4, "sigmoid"), ("dense", M, None)]
        net = funcnn.mlp([D_IN, 5, 4, M], hidden=["tanh", "sigmoid"], output=output, loss=loss, l2=L2)
    else:
        arch = ARCHS["residual"]
        net = funcnn.network(funcnn_layers(arch), input_size=D_IN, output=output, loss=loss, l2=L2)
    params = _params(net, jnp.float64, 1)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, D_IN)))
    y = random_problem([D_IN, M], output, loss, 5, jnp.float64, seed=2, int_labels=False)[2]
    ref = lambda p, a, t: reference_network_loss(arch, p, a, t, output=output, loss=loss, l2=L2)

    @jax.jit
    def pullbacks(params, x, y):
        ours = jax.vjp(net.loss_manual_vjp, params, x, y)[1](jnp.asarray(2.5))
        theirs = jax.vjp(ref, params, x, y)[1](jnp.asarray(2.5))
        return ours, theirs

    ours, theirs = pullbacks(params, x, y)
    for name, a, b in zip(("params", "x", "y"), ours, theirs):
        assert normwise_rel_err(a, b) <= 1e-10, (which, output, loss, name)


def _representable(seed, shape, low, high):
    return np.random.default_rng(seed).integers(low, high + 1, size=shape).astype(np.float32)


@pytest.mark.parametrize("variant_name", ["jit", "eager"])
def test_bf16_inputs_with_float32_sums_are_exact_on_bf16_representable_data(variant_name):
    # Small integers and dyadic fractions are exact in bfloat16 (8 significant bits); every
    # matmul input here is one, and every partial sum fits float32 exactly. So a correct bf16
    # path (bf16 inputs, float32 accumulation, float32 outputs) reproduces the float32 result
    # bit for bit, while bf16 matmul OUTPUTS or gradients rounded to bf16 cannot: the outputs
    # z2 (|z2| in the hundreds to thousands) and dW (sums over 64
    # rows of products of integers and multiples of 1/64) need more than 8 significant bits.
    # Bounds: |z1| <= 6*4*4 + 1 (x, W1 in [-4, 4]); |dz2 W2^T| <= 3*7*9/64 with dz2 = r/64,
    # r in [-7, 7], W2 in [-9, 9]: both under 256 steps, so exact in bf16.
    sizes = [6, 4, 3]
    x = jnp.asarray(_representable(0, (64, 6), -4, 4))
    params = [{"W": jnp.asarray(_representable(1, (6, 4), -4, 4)), "b": jnp.asarray(_representable(2, (4,), -1, 1))},
              {"W": jnp.asarray(_representable(3, (4, 3), -9, 9)), "b": jnp.asarray(_representable(4, (3,), -1, 1))}]
    f32 = funcnn.mlp(sizes, hidden="relu", output="identity", loss="mse")
    bf16 = funcnn.mlp(sizes, hidden="relu", output="identity", loss="mse", precision="bfloat16")
    z = f32.apply(params, x)
    # targets a small integer away from the outputs: dL/dz = (z - t)/64 is exact in bf16
    t = z - jnp.asarray(_representable(5, (64, 3), -7, 7))
    run = jax.jit if variant_name == "jit" else (lambda f: f)
    v32, g32 = run(f32.value_and_grad)(params, x, t)
    v16, g16 = run(bf16.value_and_grad)(params, x, t)
    assert float(v16) == float(v32)
    chex.assert_trees_all_equal(g16, g32)
    gv = run(jax.grad(bf16.loss_manual_vjp))(params, x, t)
    chex.assert_trees_all_equal(gv, g32)
    # and the data really needs float32 sums: rounding dW to bf16 changes it
    assert any(not np.array_equal(np.asarray(g), np.asarray(g.astype(jnp.bfloat16).astype(jnp.float32)))
               for g in jax.tree.leaves(g32))
    assert not np.array_equal(np.asarray(z), np.asarray(z.astype(jnp.bfloat16).astype(jnp.float32)))


def test_l2_reaches_weights_in_residual_blocks_but_not_gains_or_biases():
    arch = ARCHS["residual"]
    plain = funcnn.network(funcnn_layers(arch), input_size=D_IN, l2=0.0)
    reg = funcnn.network(funcnn_layers(arch), input_size=D_IN, l2=0.7)
    params = _params(plain, jnp.float64, 0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, D_IN)))
    y = jnp.array([0, 1, 2, 1, 0])
    diff = jax.tree.map(lambda a, b: a - b, reg.grad(params, x, y), plain.grad(params, x, y))
    flat = jax.tree_util.tree_flatten_with_path(diff)[0]
    weights = {jax.tree_util.keystr(p): d for p, d in flat if p[-1].key == "W"}
    others = [d for p, d in flat if p[-1].key != "W"]
    assert len(weights) == 5  # every dense W, the three inside residual blocks included
    for path, d in weights.items():
        w = funcnn.losses.weights(params)[list(weights).index(path)]
        np.testing.assert_allclose(np.asarray(d), 0.7 / 5 * np.asarray(w), rtol=1e-12, atol=1e-15)
    assert all(float(jnp.max(jnp.abs(d))) < 1e-15 for d in others)


def test_network_spelling_of_an_mlp_gives_the_same_functions():
    net = funcnn.mlp([D_IN, 5, M], hidden="tanh")
    spelled = funcnn.network([layers.dense(5, "tanh"), layers.dense(M)], input_size=D_IN)
    params = net.init(jax.random.key(0), dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, D_IN)))
    y = jnp.array([0, 1, 2, 1, 0])
    chex.assert_trees_all_equal(net.value_and_grad(params, x, y), spelled.value_and_grad(params, x, y))
    assert funcnn.network([layers.dense(5, "tanh"), layers.dense(M)], input_size=D_IN) is spelled
    assert spelled.num_params == net.num_params == 4 * 5 + 5 + 5 * 3 + 3


def test_mlp_takes_one_activation_or_rate_per_hidden_layer():
    net = funcnn.mlp([64, 128, 64, 10], hidden=["relu", "tanh"], dropout=[0.1, 0.0])
    assert [layer.name for layer in net.layers] == ["dense(128, relu, dropout=0.1)", "dense(64, tanh)", "dense(10)"]
    assert net.spec.hidden == ("relu", "tanh") and net.spec.dropout == (0.1, 0.0)
    assert funcnn.mlp([4, 3, 3, 2], hidden=["relu", "relu"]) is funcnn.mlp([4, 3, 3, 2], hidden="relu")
    with pytest.raises(ValueError, match=r"hidden lists 1 value\(s\), but the network has 2 hidden layer\(s\)"):
        funcnn.mlp([64, 128, 64, 10], hidden=["relu"])
    with pytest.raises(ValueError, match=r"dropout lists 3 value\(s\), but the network has 2"):
        funcnn.mlp([64, 128, 64, 10], dropout=[0.1, 0.1, 0.1])
    assert funcnn.spec_from_dict(net.spec.to_dict()) == net.spec


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_size=0), r"input_size must be a positive integer; got 0"),
    (dict(input_size=3, output="sigmoid", loss="cross_entropy"), r"loss='cross_entropy' does not fit output='sigmoid'"),
    (dict(input_size=3, loss="hinge"), r"loss='hinge' is not allowed"),
    (dict(input_size=3, l2=-1), r"l2 must be a finite number >= 0; got -1"),
])
def test_network_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        funcnn.network([layers.dense(2)], **kwargs)


def test_dtype_mismatch_and_empty_batch_are_refused():
    net = funcnn.mlp([3, 2])
    p = net.init(jax.random.key(0))
    with pytest.raises(TypeError, match=r"x has dtype float64 but the parameters are float32"):
        net.apply(p, jnp.ones((2, 3), jnp.float64))
    with pytest.raises(ValueError, match=r"x must hold at least one row"):
        net.loss(p, jnp.ones((0, 3), jnp.float32), jnp.zeros((0,), jnp.int32))
    with pytest.raises(TypeError, match=r"params\[0\]\['W'\] must be a floating-point array"):
        net.apply([{"W": jnp.ones((3, 2), jnp.int32), "b": jnp.zeros((2,), jnp.int32)}], jnp.ones((2, 3)))
