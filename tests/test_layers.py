"""Every built-in layer: its hand-derived backward equals jax.vjp of its forward.

The reference is ``jax.vjp`` of the layer's own ``forward`` (automatic
differentiation of the forward pass, which never runs ``backward``), pulled
back along a random cotangent (not ones), for params and x at once. Cases
cover batch 1 and a non-power-of-two batch (7), widths including 1, float64
and float32, jitted and eager.

Tolerances (normwise per leaf, max|manual - ref| / max|ref|): float64 1e-10,
float32 1e-4.

Each case is one jitted function per (layer, shape, dtype); eager runs compile
every primitive once per shape, so the eager variant runs a subset.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import normwise_rel_err, record

import funcnn
from funcnn import activations, layers

TOL = {jnp.float64: 1e-10, jnp.float32: 1e-4}


def _cases():
    """(id, layer, in_width) for every built-in layer, widths 1 and 5."""
    out = []
    for d in (1, 5):
        out += [
            (f"dense-linear-{d}", layers.dense(3), d),
            (f"dense-tanh-{d}", layers.dense(d, "tanh"), d),
            (f"dense-gelu-width1-{d}", layers.dense(1, "gelu"), d),
            (f"dense-relu-dropout-{d}", layers.dense(4, "relu", dropout=0.3), d),
            (f"dense-bf16-{d}", layers.dense(3, "swish", precision="bfloat16"), d),
            (f"activation-softplus-{d}", layers.activation("softplus"), d),
            (f"dropout-{d}", layers.dropout(0.4), d),
            (f"layer_norm-{d}", layers.layer_norm(), d),
            (f"residual-{d}", layers.residual(layers.dense(d, "tanh"), layers.layer_norm()), d),
            (f"residual-dropout-{d}", layers.residual(layers.dense(6, "elu"), layers.dropout(0.2),
                                                     layers.dense(d)), d),
        ]
    return out


CASES = _cases()


def _problem(layer, d, batch, dtype, seed=0):
    key = jax.random.key(seed)
    _, params = layer.init(key, d, dtype)
    rng = np.random.default_rng(seed + batch)
    # Non-trivial gains and biases: layer norm's gain = 1, bias = 0 would hide a swapped term.
    params = jax.tree.map(lambda a: a + jnp.asarray(0.3 * rng.normal(size=a.shape), dtype), params)
    x = jnp.asarray(rng.normal(size=(batch, d)), dtype)
    return params, x


def _compare(layer, params, x, key, transform):
    """(manual (dparams, dx), reference (dparams, dx)) for one random cotangent."""
    def both(params, x):
        y, cache = layer.forward(params, x, key=key)
        dy = jax.random.normal(jax.random.key(11), y.shape, y.dtype)
        manual = layer.backward(params, cache, dy)
        ref = jax.vjp(lambda p, a: layer.forward(p, a, key=key)[0], params, x)[1](dy)
        return manual, ref
    return transform(both)(params, x)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,layer,d", CASES, ids=[c[0] for c in CASES])
def test_backward_matches_jax_vjp_of_forward_jitted(name, layer, d, dtype):
    key = jax.random.key(5) if layer.random else None
    for batch in (1, 7):
        params, x = _problem(layer, d, batch, dtype)
        (dp, dx), (rp, rx) = _compare(layer, params, x, key, jax.jit)
        jax.tree.map(lambda a, b: None, dp, params)  # dparams has exactly the structure of params
        assert dx.shape == x.shape and dx.dtype == x.dtype
        tol = 2e-2 if "bf16" in name else TOL[dtype]  # bf16 matmul inputs: ~2^-8 relative rounding
        if "bf16" in name and dtype == jnp.float64:
            continue  # bf16 layers are for float32 parameters
        err = max(normwise_rel_err(dp, rp), normwise_rel_err(dx, rx))
        if "bf16" not in name:
            record("layer backward vs jax.vjp", dtype, err)
        assert err <= tol, (name, batch, err)


@pytest.mark.parametrize("name,layer,d", [c for c in CASES if c[2] == 5 and "bf16" not in c[0]],
                         ids=[c[0] for c in CASES if c[2] == 5 and "bf16" not in c[0]])
def test_backward_matches_jax_vjp_of_forward_eager(name, layer, d):
    key = jax.random.key(5) if layer.random else None
    params, x = _problem(layer, d, 7, jnp.float64)
    (dp, dx), (rp, rx) = _compare(layer, params, x, key, lambda f: f)
    assert max(normwise_rel_err(dp, rp), normwise_rel_err(dx, rx)) <= 1e-10, name


def test_layer_norm_forward_is_the_textbook_formula():
    ln = layers.layer_norm(eps=1e-5)
    params, x = _problem(ln, 6, 4, jnp.float64)
    y, _ = ln.forward(params, x)
    xn = np.asarray(x)
    mu, var = xn.mean(1, keepdims=True), xn.var(1, keepdims=True)  # biased variance
    want = (xn - mu) / np.sqrt(var + 1e-5) * np.asarray(params["gain"]) + np.asarray(params["bias"])
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-12, atol=1e-12)
    _, fresh = ln.init(jax.random.key(0), 6, jnp.float32)
    assert np.all(np.asarray(fresh["gain"]) == 1) and np.all(np.asarray(fresh["bias"]) == 0)


def test_dropout_is_identity_without_a_key_and_inverted_with_one():
    drop = layers.dropout(0.25)
    x = jnp.ones((400, 10), jnp.float32)
    y, mask = drop.forward({}, x)
    assert mask is None and np.array_equal(np.asarray(y), np.asarray(x))
    y, mask = drop.forward({}, x, key=jax.random.key(0))
    vals = set(np.unique(np.asarray(y)).tolist())
    assert vals == {0.0, np.float32(1 / 0.75)}
    assert abs(float(jnp.mean(y == 0)) - 0.25) < 0.02  # 4,000 draws: std of the mean 0.007


@pytest.mark.parametrize("rate", [0.1, 0.25, 1 / 3, 0.5, 0.9])
def test_a_dropout_key_sets_the_rate_and_draws_the_layers_own_masks(rate):
    """DropoutKey(key, 1 - rate) on a network built with another rate draws, bit for bit, the masks
    of the network built with ``rate`` (dense dropout, a dropout layer and a residual block's inner
    dropout, the key split among them as the network splits it), so its forward pass is that one's
    (to float32 rounding: the two are different XLA programs)."""
    def build(r):
        return funcnn.network([layers.dense(7, "relu", dropout=r), layers.dropout(r),
                               layers.residual(layers.dense(7, "tanh", dropout=r)), layers.dense(3)], input_size=5)

    def masks(fwd):  # the three layers' masks, from the forward pass's caches
        c = fwd[2].layers
        return [c[0].mask, c[1], c[2][0].mask]

    x = jax.random.normal(jax.random.key(1), (9, 5), jnp.float32)
    key = jax.random.key(4)
    params = build(rate).init(jax.random.key(0))
    want = build(rate).forward(params, x, key=key)
    keep = layers.keep_of(rate)
    assert keep == jnp.asarray(1.0 - rate, jnp.result_type(float))  # 1 - rate in float64, then the default dtype
    got = jax.jit(lambda p, x, k: build(0.5).forward(p, x, key=layers.DropoutKey(k, keep)))(params, x, key)
    for a, b in zip(masks(got), masks(want), strict=True):
        assert a.dtype == b.dtype == jnp.float32 and np.array_equal(np.asarray(a), np.asarray(b))
    assert set(np.unique(np.asarray(masks(got)[1])).tolist()) == {0.0, np.float32(1 / np.float32(1 - rate))}
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-6, atol=0)
    # several rates at once under vmap: each model's masks are its own rate's
    keeps = jnp.asarray([1.0 - rate, 1.0, 0.5], keep.dtype)
    many = jax.vmap(lambda k: build(0.5).forward(params, x, key=layers.DropoutKey(key, k)))(keeps)
    for i, want_i in enumerate([want, build(0.0).forward(params, x), build(0.5).forward(params, x, key=key)]):
        if i == 1:  # keep = 1: every unit kept (masks of ones), the network without dropout
            assert all(np.all(np.asarray(m[i]) == 1) for m in masks(many))
        else:
            for a, b in zip(masks(many), masks(want_i), strict=True):
                assert np.array_equal(np.asarray(a[i]), np.asarray(b))
        np.testing.assert_allclose(np.asarray(many[1][i]), np.asarray(want_i[1]), rtol=1e-6, atol=0)


def test_only_dropout_layers_take_a_dropout_key():
    assert layers.dense(3, dropout=0.2).dropout_key and layers.dropout(0.2).dropout_key
    assert layers.residual(layers.dense(3, dropout=0.2)).dropout_key
    assert not layers.dense(3).dropout_key and not layers.dropout(0.0).dropout_key  # not random at all
    custom = layers.Layer("noise", lambda k, d, t: (d, {}), lambda p, x, *, key=None: (x, None),
                          lambda p, c, dy: ({}, dy), layers.spec("noise"), random=True)
    assert not custom.dropout_key
    assert not layers.residual(custom, layers.dense(3, dropout=0.2)).dropout_key


def test_residual_must_keep_the_width():
    net_layers = [layers.dense(4, "relu"), layers.residual(layers.dense(3, "tanh")), layers.dense(2)]
    with pytest.raises(ValueError, match=r"residual: the inner layers map width 4 to 3; a residual block"):
        funcnn.network(net_layers, input_size=5)


def test_constructors_are_cached_values():
    assert layers.dense(4, "relu") is layers.dense(4, activations.HIDDEN["relu"])
    assert layers.layer_norm() is layers.layer_norm(1e-5)
    assert layers.residual(layers.dense(3)) is layers.residual(layers.dense(3))
    assert layers.dense(4, "relu") is not layers.dense(4, "tanh")


@pytest.mark.parametrize("layer", [c[1] for c in CASES if c[2] == 5], ids=[c[0] for c in CASES if c[2] == 5])
def test_spec_is_json_and_rebuilds_the_same_layer(layer):
    text = json.dumps(layers.spec_to_json(layer.spec))
    assert layers.from_spec(json.loads(text)) is layer
    hash(layer.spec)


@pytest.mark.parametrize("bad,match", [
    (lambda: layers.dense(0), r"width must be a positive integer; got 0"),
    (lambda: layers.dense(3, "rleu"), r"hidden='rleu' is not allowed.*Did you mean 'relu'"),
    (lambda: layers.dense(3, dropout=1.0), r"dropout must be a number in \[0, 1\); got 1.0"),
    (lambda: layers.dropout(-0.1), r"rate must be a number in \[0, 1\)"),
    (lambda: layers.layer_norm(0.0), r"eps must be a positive finite number; got 0.0"),
    (lambda: layers.residual(), r"residual must be a non-empty list of Layer values"),
    (lambda: layers.residual("dense"), r"residual\[0\] must be a Layer"),
    (lambda: funcnn.network([layers.dense(3), "relu"], input_size=2), r"layers\[1\] must be a Layer"),
    (lambda: layers.from_spec({"name": "maxout", "k": 2}), r"not a built-in layer.*custom=\[\.\.\.\]"),
])
def test_bad_arguments_are_named(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        bad()
