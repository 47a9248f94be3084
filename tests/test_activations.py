"""Hand-derived activation derivatives against jax.grad of plainly written formulas.

Every formula below is written here, in the most textbook form (no stability
tricks), so ``jax.grad`` of it is an independent reference for the derivative
``grad(z, fn(z))`` written by hand in ``funcnn.activations``. The points avoid
z = 0 exactly (the kinks, tested separately) and stay in [-6, 6], where the
naive formulas are still accurate in float64.

Tolerances (float64): relative 1e-12 plus absolute 1e-14 (about 45 ulp of 1).
The absolute part is needed because the derivatives subtract from 1 (tanh' =
1 - y^2, gelu's 1 + tanh(u) at u -> -inf), which is accurate to ~eps absolute,
not relative: at z = 6, tanh' ~ 2.5e-5 carries a relative error ~1e-11 from
rounding alone, and under jit XLA's fused tanh moves gelu'(-6) ~ 1e-9 by ~7e-15.
The derivatives are O(1), so a wrong formula is wrong by far more than either bound.

Each test jits one function covering every activation (one XLA compile per
test, not one per activation): compiles cost ~0.1-0.3 s here.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn
from funcnn import activations

RTOL, ATOL = 1e-12, 1e-14

PLAIN = {
    "identity": lambda z: z,
    "relu": lambda z: jnp.where(z > 0, z, 0.0),
    "leaky_relu": lambda z: jnp.where(z > 0, z, 0.01 * z),
    "sigmoid": lambda z: 1.0 / (1.0 + jnp.exp(-z)),
    "tanh": lambda z: jnp.sinh(z) / jnp.cosh(z),
    "softplus": lambda z: jnp.log(1.0 + jnp.exp(z)),
    "elu": lambda z: jnp.where(z > 0, z, jnp.exp(z) - 1.0),
    "gelu": lambda z: 0.5 * z * (1.0 + jnp.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
    "swish": lambda z: z / (1.0 + jnp.exp(-z)),
}
PLAIN["linear"] = PLAIN["identity"]
PLAIN["silu"] = PLAIN["swish"]

# 240 points: an even count, so linspace never hits 0.0 exactly.
Z = np.linspace(-6.0, 6.0, 240)
assert not np.any(Z == 0.0)


def on_grid(values, dtype=jnp.float64):
    """``values`` followed by the rest of Z: every eager call in this file has Z's
    shape, because eager ops compile once per (shape, dtype) (~0.02 s each)."""
    v = np.asarray(values, np.float64)
    return jnp.asarray(np.concatenate([v, Z[len(v):]]), dtype)


@jax.jit
def reference(z):
    """{name: (plain fn(z), jax.grad of plain fn at each z)}; jitted once, shared by the tests."""
    return {k: (f(z), jax.vmap(jax.grad(f))(z)) for k, f in PLAIN.items()}


def test_every_hidden_activation_has_a_plain_reference():
    # If an activation is added to the library, this test makes the author add
    # its plain formula here (and so a derivative check).
    assert set(activations.HIDDEN) == set(PLAIN)
    assert {"linear", "silu"} <= set(activations.HIDDEN)


def test_forward_matches_plain_formula():
    z = jnp.asarray(Z)
    ref = reference(z)
    for name, act in activations.HIDDEN.items():
        np.testing.assert_allclose(np.asarray(act.fn(z)), np.asarray(ref[name][0]),
                                   rtol=RTOL, atol=ATOL, err_msg=name)


def test_hand_derived_grad_matches_autodiff_of_plain_formula(variant):
    z = jnp.asarray(Z)
    grads = variant(lambda z: {k: a.grad(z, a.fn(z)) for k, a in activations.HIDDEN.items()})(z)
    ref = reference(z)
    for name in activations.HIDDEN:
        got, want = grads[name], ref[name][1]
        assert got.shape == z.shape and got.dtype == jnp.float64, name
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL, err_msg=name)


def test_float32_in_float32_out_and_close_to_the_float64_reference():
    z = jnp.asarray(Z, jnp.float32)
    ref = reference(jnp.asarray(Z))
    for name, act in activations.HIDDEN.items():
        y = act.fn(z)
        g = act.grad(z, y)
        assert y.dtype == g.dtype == jnp.float32, name
        assert y.shape == g.shape == Z.shape, name
        # float32 vs float64: a few float32 ulp (eps32 ~ 1.2e-7) relative; 1e-5
        # absolute covers 1 - y^2 and 1 + tanh(u) cancellation near |z| = 6.
        np.testing.assert_allclose(np.asarray(g), np.asarray(ref[name][1]), rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.asarray(y), np.asarray(ref[name][0]), rtol=1e-5, atol=1e-5, err_msg=name)


def test_kink_convention(variant):
    # At a kink the derivative takes the value of the z <= 0 branch (module docstring).
    # (No subnormal z: XLA on CPU flushes them to zero, so their sign test is moot.)
    z = on_grid([0.0, -0.0, 1e-300, -1e-300, 2.0, -2.0])
    want = {
        "relu": [0.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        "leaky_relu": [0.01, 0.01, 1.0, 0.01, 1.0, 0.01],
        # elu's two branches agree at 0 (alpha e^0 = 1): continuous derivative.
        "elu": [1.0, 1.0, 1.0, 1.0, 1.0, np.exp(-2.0)],
    }
    acts = {k: activations.hidden(k) for k in want}
    both = variant(lambda z: {k: (a.fn(z), a.grad(z, a.fn(z))) for k, a in acts.items()})(z)
    for name, w in want.items():
        y, g = both[name]
        np.testing.assert_allclose(np.asarray(g[:6]), w, rtol=1e-15, atol=0, err_msg=name)
        assert float(y[0]) == 0.0 and float(y[1]) == 0.0, name  # the value at the kink


@pytest.mark.parametrize("alias,target", [("linear", "identity"), ("silu", "swish")])
def test_aliases_behave_like_their_targets(alias, target):
    a, t = activations.hidden(alias), activations.hidden(target)
    assert a.name == alias and t.name == target
    z = on_grid([0.0, -50.0, 50.0])
    np.testing.assert_array_equal(np.asarray(a.fn(z)), np.asarray(t.fn(z)))
    np.testing.assert_array_equal(np.asarray(a.grad(z, a.fn(z))), np.asarray(t.grad(z, t.fn(z))))
    # a network built with the alias is the same network as with the target
    assert funcnn.mlp([3, 2, 2], hidden=alias).spec.hidden == alias


BIG = np.array([-1e3, -300.0, -89.0, -30.0, -1.0, 1.0, 30.0, 89.0, 300.0, 1e3])
# Exact limits at |z| = 1e3 (value, derivative): the naive formulas give inf/NaN here.
# Every activation must stay finite; these must also reach their limits.
LIMITS = {
    "sigmoid": {-1e3: (0.0, 0.0), 1e3: (1.0, 0.0)},
    "softplus": {-1e3: (0.0, 0.0), 1e3: (1e3, 1.0)},
    "elu": {-1e3: (-1.0, 0.0), 1e3: (1e3, 1.0)},
    "swish": {-1e3: (0.0, 0.0), 1e3: (1e3, 1.0)},
    "gelu": {-1e3: (0.0, 0.0), 1e3: (1e3, 1.0)},
    "tanh": {-1e3: (-1.0, 0.0), 1e3: (1.0, 0.0)},
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_large_inputs_are_finite_with_exact_limits(variant, dtype):
    z = on_grid(BIG, dtype)
    both = variant(lambda z: {k: (a.fn(z), a.grad(z, a.fn(z))) for k, a in activations.HIDDEN.items()})(z)
    for name, (y, g) in both.items():
        assert y.dtype == g.dtype == dtype, name
        assert np.all(np.isfinite(np.asarray(y))) and np.all(np.isfinite(np.asarray(g))), (name, y, g)
        for zi, (yv, gv) in LIMITS.get(name, {}).items():
            i = int(np.flatnonzero(zi == BIG)[0])
            # the limits are reached to rounding at |z| = 1000 (e^-1000 underflows)
            np.testing.assert_allclose(float(y[i]), yv, rtol=1e-7, atol=1e-30, err_msg=(name, zi))
            np.testing.assert_allclose(float(g[i]), gv, rtol=1e-7, atol=1e-30, err_msg=(name, zi))


def test_nan_propagates(variant):
    # relu must not turn a NaN into 0 (a where(z > 0, z, 0) would); the same holds for all.
    z = on_grid([np.nan, 1.0, -1.0])
    ys = variant(lambda z: {k: a.fn(z) for k, a in activations.HIDDEN.items()})(z)
    for name, y in ys.items():
        assert np.isnan(float(y[0])), name
        assert np.all(np.isfinite(np.asarray(y[1:]))), name


# ---------------------------------------------------------------- output activations

PLAIN_OUT = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + jnp.exp(-z)),
    "softmax": lambda z: jnp.exp(z) / jnp.sum(jnp.exp(z), axis=1, keepdims=True),
}


def test_every_output_activation_has_a_plain_reference():
    assert set(activations.OUTPUT) == set(PLAIN_OUT)


@jax.jit
def reference_vjps(zs, dys):
    """{name: [(plain fn(z), jax.vjp of plain fn applied to dy) per (z, dy)]}, jitted once."""
    def one(f, z, dy):
        y, pullback = jax.vjp(f, z)
        return y, pullback(dy)[0]
    return {k: [one(f, z, dy) for z, dy in zip(zs, dys)] for k, f in PLAIN_OUT.items()}


def test_output_vjp_matches_jax_vjp_of_plain_formula(variant):
    rng = np.random.default_rng(0)
    shapes = [(1, 4), (7, 4), (7, 1)]  # batch 1 and width 1 included
    zs = [jnp.asarray(rng.normal(size=s) * 2) for s in shapes]
    dys = [jnp.asarray(rng.normal(size=s)) for s in shapes]
    refs = reference_vjps(zs, dys)
    ours = variant(lambda zs, dys: {k: [(o.fn(z), o.vjp(z, o.fn(z), dy)) for z, dy in zip(zs, dys)]
                                    for k, o in activations.OUTPUT.items()})(zs, dys)
    for name in activations.OUTPUT:
        for (n, m), (y, dz), (y_ref, dz_ref) in zip(shapes, ours[name], refs[name]):
            assert dz.shape == (n, m), (name, n, m)
            np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=RTOL, atol=ATOL,
                                       err_msg=(name, n, m))
            # dy - <dy, y> cancels: absolute rounding ~ eps * max|dy| (|dy| < 5 here).
            np.testing.assert_allclose(np.asarray(dz), np.asarray(dz_ref), rtol=RTOL, atol=5 * ATOL,
                                       err_msg=(name, n, m))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_softmax_rows_sum_to_one_and_are_stable_for_large_logits(variant, dtype):
    out = activations.output("softmax")
    z = jnp.asarray([[1e3, 0.0, -1e3], [1e3, 1e3, 999.0], [-1e3, -1e3, -1e3], [0.1, 0.2, 0.3]], dtype)
    y = variant(out.fn)(z)
    assert y.dtype == dtype
    assert np.all(np.isfinite(np.asarray(y)))
    # rows sum to one to a few ulp of the dtype
    tol = 4 * float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(np.asarray(y).sum(1), 1.0, rtol=0, atol=tol)
    # expected rows from NumPy float64 on shifted logits (shift-invariance of softmax)
    shifted = np.array([[0.0, -1e3, -2e3], [0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-0.2, -0.1, 0.0]])
    want = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=2 * tol, atol=1e-30)
    dz = out.vjp(z, y, jnp.ones_like(z).at[:, 0].set(2.0))
    assert np.all(np.isfinite(np.asarray(dz)))


def test_unknown_names_raise_and_list_the_allowed_names():
    with pytest.raises(ValueError) as e:
        activations.hidden("foo")
    msg = str(e.value)
    assert "hidden='foo'" in msg
    for name in activations.HIDDEN:
        assert repr(name) in msg, name
    with pytest.raises(ValueError, match=r"Did you mean 'relu'"):
        activations.hidden("rleu")
    with pytest.raises(ValueError) as e:
        activations.output("foo")
    assert "output='foo'" in str(e.value)
    for name in activations.OUTPUT:
        assert repr(name) in str(e.value), name
    # softmax is an output activation, not a hidden one
    with pytest.raises(ValueError, match="hidden='softmax'"):
        activations.hidden("softmax")
    with pytest.raises(ValueError, match="hidden=None"):
        activations.hidden(None)
