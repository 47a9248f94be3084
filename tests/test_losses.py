"""Losses against the plain formulas of the module docstring, and their gradients
against jax.grad of those formulas.

The plain losses below take the logits z, apply the output activation written
out by hand (no max-shift, no logaddexp), and evaluate the textbook formula, so
``jax.grad`` of them is an independent reference for ``dlogits`` and
``dtargets``. Logits are moderate (|z| < ~8) where the naive forms are accurate;
large logits are tested separately against exact limits.

Tolerances (float64): values 1e-13 relative (one log/exp and a short sum: a few
ulp). Gradients 1e-12 relative plus 1e-16 absolute: entries are O(1/n) and a
softmax gradient p - t cancels, so near-zero entries carry ~eps/n absolute error.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import activations, losses

VALUE_RTOL = 1e-13
GRAD_RTOL, GRAD_ATOL = 1e-12, 1e-16


def plain_output(name, z):
    if name == "identity":
        return z
    if name == "sigmoid":
        return 1.0 / (1.0 + jnp.exp(-z))
    return jnp.exp(z) / jnp.sum(jnp.exp(z), axis=1, keepdims=True)


def plain_loss(output, loss, z, t):
    """The module docstring's formulas, written plainly; t is float rows [n, m]."""
    n = z.shape[0]
    y = plain_output(output, z)
    if loss == "mse":
        return jnp.sum((y - t) ** 2) / (2 * n)
    if loss == "cross_entropy":
        return -jnp.sum(t * jnp.log(y)) / n
    return -jnp.sum(t * jnp.log(y) + (1 - t) * jnp.log(1 - y)) / n


def one_hot(labels, m):
    return jnp.asarray(np.eye(m)[np.asarray(labels)])


def cases(n, m=4, seed=0):
    """(output, loss, kind, z, t) for every allowed pair; CE with labels, rows, unnormalised rows."""
    rng = np.random.default_rng(seed + n)
    z = jnp.asarray(2.0 * rng.normal(size=(n, m)))
    soft = rng.random((n, m)) + 0.05
    out = []
    for loss, outputs in losses.PAIRS.items():
        for o in outputs:
            if loss == "mse":
                out.append((o, loss, "rows", z, jnp.asarray(rng.normal(size=(n, m)))))
            elif loss == "cross_entropy":
                out.append((o, loss, "labels", z, jnp.asarray(rng.integers(0, m, size=n), jnp.int32)))
                out.append((o, loss, "rows", z, jnp.asarray(soft / soft.sum(1, keepdims=True))))
                # rows not summing to 1: dL/dz = p * sum_k t_k - t, not p - t
                out.append((o, loss, "unnormalised", z, jnp.asarray(2.0 * soft)))
            else:
                out.append((o, loss, "rows", z, jnp.asarray(rng.random((n, m)))))  # soft labels in [0, 1]
    return out


def test_cases_cover_every_allowed_pair():
    assert {(o, l) for o, l, *_ in cases(3)} == {(o, l) for l, os in losses.PAIRS.items() for o in os}
    assert set(losses.PAIRS) == {"mse", "cross_entropy", "binary_cross_entropy"}


@pytest.mark.parametrize("n", [1, 7])
def test_values_match_numpy_float64_formulas(n):
    for output, loss, kind, z, t in cases(n):
        fns = losses.get(loss, activations.output(output))
        assert fns.name == loss
        zz = np.asarray(z)
        # NumPy float64, from the docstring, independent of jax
        if output == "identity":
            y = zz
        elif output == "sigmoid":
            y = 1 / (1 + np.exp(-zz))
        else:
            y = np.exp(zz) / np.exp(zz).sum(1, keepdims=True)
        T = np.eye(zz.shape[1])[np.asarray(t)] if kind == "labels" else np.asarray(t)
        if loss == "mse":
            want = ((y - T) ** 2).sum() / (2 * n)
        elif loss == "cross_entropy":
            want = -(T * np.log(y)).sum() / n
        else:
            want = -(T * np.log(y) + (1 - T) * np.log(1 - y)).sum() / n
        got = fns.value(z, activations.output(output).fn(z), t)
        assert got.shape == () and got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), want, rtol=VALUE_RTOL, err_msg=(output, loss, kind, n))


def test_cross_entropy_labels_equal_one_hot_rows():
    out = activations.output("softmax")
    fns = losses.get("cross_entropy", out)
    z = jnp.asarray(np.random.default_rng(1).normal(size=(7, 4)))  # the shape of cases(7): no new compiles
    labels = jnp.array([0, 3, 2, 2, 1, 3, 0], jnp.int32)
    y = out.fn(z)
    np.testing.assert_allclose(float(fns.value(z, y, labels)), float(fns.value(z, y, one_hot(labels, 4))),
                               rtol=VALUE_RTOL)
    np.testing.assert_allclose(np.asarray(fns.dlogits(z, y, labels)),
                               np.asarray(fns.dlogits(z, y, one_hot(labels, 4))), rtol=GRAD_RTOL, atol=GRAD_ATOL)


@functools.partial(jax.jit, static_argnums=0)
def reference_grads(keys, zs, ts):
    """jax.grad of the plain loss w.r.t. z and t, per case; keys = ((output, loss, kind), ...)."""
    res = []
    for (output, loss, kind), z, t in zip(keys, zs, ts):
        T = jax.nn.one_hot(t, z.shape[1], dtype=z.dtype) if kind == "labels" else t
        res.append(jax.grad(lambda z, T: plain_loss(output, loss, z, T), argnums=(0, 1))(z, T))
    return res


def test_dlogits_and_dtargets_match_autodiff_of_plain_loss(variant):
    for n in (1, 7):
        cs = cases(n)
        zs, ts = [c[3] for c in cs], [c[4] for c in cs]
        refs = reference_grads(tuple(c[:3] for c in cs), zs, ts)
        fns = [losses.get(l, activations.output(o)) for o, l, *_ in cs]
        outs = [activations.output(o) for o, *_ in cs]

        def ours(zs, ts):
            return [(f.dlogits(z, o.fn(z), t), f.dtargets(z, o.fn(z), t))
                    for f, o, z, t in zip(fns, outs, zs, ts)]

        for (output, loss, kind, z, t), (dz, dt), (dz_ref, dt_ref) in zip(cs, variant(ours)(zs, ts), refs):
            what = (output, loss, kind, n)
            assert dz.shape == z.shape and dz.dtype == jnp.float64, what
            np.testing.assert_allclose(np.asarray(dz), np.asarray(dz_ref), rtol=GRAD_RTOL, atol=GRAD_ATOL,
                                       err_msg=str(what))
            if kind != "labels":  # integer labels have no derivative
                assert dt.shape == t.shape, what
                np.testing.assert_allclose(np.asarray(dt), np.asarray(dt_ref), rtol=GRAD_RTOL,
                                           atol=GRAD_ATOL, err_msg=str(what))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_cross_entropy_is_stable_for_huge_logits(variant, dtype):
    out = activations.output("softmax")
    fns = losses.get("cross_entropy", out)
    z = jnp.asarray([[1e3, -1e3, 0.0], [-1e3, 1e3, 500.0]], dtype)
    labels = jnp.array([0, 0], jnp.int32)
    value, dz = variant(lambda z: (fns.value(z, out.fn(z), labels), fns.dlogits(z, out.fn(z), labels)))(z)
    # Row 0 is certain and right (loss 0); row 1 is certain and wrong by 2000
    # nats: -log p_0 = logsumexp(z) - z_0 = 1000 - (-1000) (+ log(1 + e^-500), zero
    # in floating point). Mean over the batch: 1000, exactly.
    assert value.dtype == dtype
    assert float(value) == 1000.0
    # (p - onehot) / n: row 0 is 0, row 1 is (-1, 1, e^-500) / 2.
    want = np.array([[0.0, 0.0, 0.0], [-0.5, 0.5, 0.0]])
    np.testing.assert_allclose(np.asarray(dz, np.float64), want, rtol=0, atol=1e-200)
    # soft targets: same limits
    soft = jnp.asarray([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype)
    assert float(fns.value(z, out.fn(z), soft)) == 1000.0
    assert np.all(np.isfinite(np.asarray(fns.dtargets(z, out.fn(z), soft))))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_binary_cross_entropy_is_stable_for_huge_logits(variant, dtype):
    out = activations.output("sigmoid")
    fns = losses.get("binary_cross_entropy", out)
    z = jnp.asarray([[1e3, -1e3, 1e3, -1e3]], dtype)
    t = jnp.asarray([[1.0, 0.0, 0.0, 1.0]], dtype)
    f = variant(lambda z, t: (fns.value(z, out.fn(z), t), fns.dlogits(z, out.fn(z), t),
                              fns.dtargets(z, out.fn(z), t)))
    value, dz, dt = f(z, t)
    # per entry softplus(z) - t z: 0 (right and certain), 0, 1000, 1000 (wrong by 1000 nats)
    assert value.dtype == dtype and float(value) == 2000.0
    np.testing.assert_array_equal(np.asarray(dz), [[0.0, 0.0, 1.0, -1.0]])  # s - t, exact
    np.testing.assert_array_equal(np.asarray(dt), [[-1e3, 1e3, -1e3, 1e3]])  # -z
    # the single most extreme right answer is exactly zero loss
    v1 = f(jnp.asarray([[1e3]], dtype), jnp.asarray([[1.0]], dtype))[0]
    assert float(v1) == 0.0


def test_mse_after_sigmoid_is_finite_for_huge_logits():
    out = activations.output("sigmoid")
    fns = losses.get("mse", out)
    z = jnp.asarray([[1e3, -1e3]])
    t = jnp.asarray([[0.0, 0.0]])
    # y = (1, 0): L = 1/(2*1) * 1 = 0.5; dL/dz = (y - t) y (1 - y) = 0 (saturated)
    assert float(fns.value(z, out.fn(z), t)) == 0.5
    np.testing.assert_array_equal(np.asarray(fns.dlogits(z, out.fn(z), t)), [[0.0, 0.0]])


def test_disallowed_pairs_raise_naming_both_and_listing_allowed_pairs():
    allowed = {(o, l) for l, os in losses.PAIRS.items() for o in os}
    disallowed = [(o, l) for o in activations.OUTPUT for l in losses.PAIRS if (o, l) not in allowed]
    # every output is allowed with something, and the obvious mistakes are refused
    assert {("sigmoid", "cross_entropy"), ("identity", "cross_entropy"),
            ("identity", "binary_cross_entropy"), ("softmax", "binary_cross_entropy")} == set(disallowed)
    for o, l in disallowed:
        with pytest.raises(ValueError) as e:
            losses.get(l, activations.output(o))
        msg = str(e.value)
        assert f"loss={l!r}" in msg and f"output={o!r}" in msg, msg
        for ao, al in allowed:
            assert f"({ao}, {al})" in msg, (ao, al, msg)


def test_unknown_loss_name_raises_listing_losses():
    with pytest.raises(ValueError) as e:
        losses.get("hinge", activations.output("softmax"))
    for name in losses.PAIRS:
        assert repr(name) in str(e.value)
    with pytest.raises(ValueError, match="Did you mean 'cross_entropy'"):
        losses.get("crossentropy", activations.output("softmax"))


def test_l2_penalty_is_lambda_over_2n_sum_of_squared_weights_without_biases():
    rng = np.random.default_rng(3)
    sizes = [5, 4, 3, 2]
    params = [{"W": jnp.asarray(rng.normal(size=(a, b))), "b": jnp.asarray(rng.normal(size=(b,)))}
              for a, b in zip(sizes[:-1], sizes[1:])]
    lam, n = 0.3, 7
    want = lam / (2 * n) * sum((np.asarray(p["W"]) ** 2).sum() for p in params)
    # jitted: one compile instead of one per eager op and shape
    penalty = jax.jit(jax.value_and_grad(losses.l2_penalty), static_argnums=(1, 2))
    got, g = penalty(params, lam, n)
    np.testing.assert_allclose(float(got), want, rtol=VALUE_RTOL)
    # biases do not enter: changing them leaves the penalty unchanged
    bumped = [{"W": p["W"], "b": p["b"] + 10.0} for p in params]
    assert float(penalty(bumped, lam, n)[0]) == float(got)
    assert float(penalty(params, 0.0, n)[0]) == 0.0
    # its gradient (w.r.t. W) is lambda/n W, biases get none
    for p, gp in zip(params, g):
        np.testing.assert_allclose(np.asarray(gp["W"]), lam / n * np.asarray(p["W"]), rtol=GRAD_RTOL)
        assert float(jnp.abs(gp["b"]).max()) == 0.0
