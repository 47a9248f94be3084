"""The gradient check must pass a correct backward and catch a wrong one, and say where.

A correct network passes in float64 and float32. Wrong backward passes are
made three ways: a hidden activation's derivative replaced (``broken_derivative``
from tests/reference.py: only the manual backward changes, the forward and so
``jax.grad`` stay right), the same derivative off by 0.1 % (a loose check, e.g.
``allclose(rtol=1e-2)``, would pass it), and a ``manual_grad`` whose last bias
gradient is doubled. In each case the failing rows must be exactly the leaves
whose gradient depends on the break. The report's numbers for a broken leaf are
recomputed here from ``jax.grad`` of ``reference_loss`` (plain jnp, no funcnn).

Each gradcheck compiles a few small XLA programs, and its eager parts compile
every op once per (shape, dtype) (~2 s for a new one), so all networks share
one shape, checks are shared through module-scoped fixtures, and l2 stays 0
(gradcheck treats the penalty as part of ``net.loss``; test_mlp_gradients
covers it).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import broken_derivative, random_problem, reference_loss

import funcnn
from funcnn import gradcheck as gc

REFERENCES = ("reverse", "forward", "finite_diff")
SIZES = [4, 5, 5, 3]  # two hidden layers: leaves [0], [1] hidden, [2] the output layer
# The documented tolerances are the contract: loosening them must fail a test.
MAX_TOL = {"float64": {"reverse": 1e-10, "forward": 1e-10, "finite_diff": 1e-6},
           "float32": {"reverse": 1e-4, "forward": 1e-4, "finite_diff": 1e-4}}


def leaf_paths(sizes):
    return {f"[{l}]['{k}']" for l in range(len(sizes) - 1) for k in "Wb"}


def failing(report):
    return {r.path for r in report.rows if not r.passed}


def manual_vs_reference(net, params, x, y, hidden, path):
    """(max_abs, max_rel, cosine, worst_index) of net.grad vs jax.grad(reference_loss), for one leaf."""
    s = net.spec
    # jitted: one compile rather than one per eager op (the reference is plain jnp either way)
    ref = jax.jit(jax.grad(lambda p: reference_loss(p, x, y, hidden=hidden, output=s.output, loss=s.loss,
                                                    l2=s.l2)))(params)
    l, k = int(path[1]), path[-3]
    a, b = np.asarray(net.grad(params, x, y)[l][k]), np.asarray(ref[l][k])
    err = np.abs(a - b)
    cos = a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)
    return err.max(), err.max() / np.abs(b).max(), cos, np.unravel_index(err.argmax(), err.shape)


@pytest.fixture(scope="module")
def tanh_problem():
    net = funcnn.mlp(SIZES, hidden="tanh")
    params, x, y = random_problem(SIZES, "softmax", "cross_entropy", 6, jnp.float64)
    return net, params, x, y


@pytest.fixture(scope="module")
def tanh_report(tanh_problem):
    return funcnn.gradcheck(*tanh_problem)


def test_module_is_callable_and_returns_a_report(tanh_problem, tanh_report):
    assert callable(funcnn.gradcheck)
    assert isinstance(tanh_report, funcnn.GradcheckReport)
    again = gc.gradcheck(*tanh_problem, sweep_entries=0)
    assert [(r.path, r.reference, r.passed) for r in again.rows] == \
           [(r.path, r.reference, r.passed) for r in tanh_report.rows]
    assert again.sweep is None


def test_correct_network_passes_in_float64(tanh_report):
    r = tanh_report
    assert r.passed and r.dtype == "float64"
    assert {(row.path, row.reference) for row in r.rows} == \
           {(p, ref) for p in leaf_paths(SIZES) for ref in REFERENCES}
    assert len(r.rows) == 3 * len(leaf_paths(SIZES))
    for row in r.rows:
        assert row.passed and row.max_rel <= row.tolerance <= MAX_TOL["float64"][row.reference], row
        assert row.layer == int(row.path[1])
        assert row.cosine > 1 - 1e-12, row
        assert row.excluded == 0, row  # tanh has no kinks
    # rounding-level agreement with autodiff, finite differences at their O(eps^(2/3))
    assert r.worst("reverse").max_rel < 1e-13 and r.worst("forward").max_rel < 1e-13
    assert r.worst("finite_diff").max_rel < 1e-8


def test_report_table(tanh_report):
    text = str(tanh_report)
    for path in leaf_paths(SIZES):
        assert path in text
    for ref in REFERENCES:
        assert ref in text
    assert "eps sweep" in text and "minimum" in text
    assert text.rstrip().endswith("PASSED") and "FAIL" not in text
    assert "4-5-5-3 tanh/softmax/cross_entropy" in text and "float64" in text
    # one table line per row
    assert sum(line.startswith("[") for line in text.splitlines()) == len(tanh_report.rows)


def test_eps_sweep_has_its_minimum_between_truncation_and_rounding(tanh_report):
    s = tanh_report.sweep
    h_best, e_best = s.best
    assert s.num_entries > 0 and len(s.steps) == len(s.max_rel)
    assert e_best < 1e-6
    assert 1e-8 <= h_best <= 1e-3  # theory: ~eps^(1/3) = 6e-6
    big = s.max_rel[s.steps.index(1e-1)]
    assert big > 1e3 * e_best
    # Central differences: truncation error ~ h^2 f'''/6, so on the truncation
    # side a 10x smaller step is ~100x more accurate (65..150 allows the h^4 term).
    ratio = big / s.max_rel[s.steps.index(1e-2)]
    assert 65 < ratio < 150, ratio
    # and on the rounding side the error grows again (~eps/h)
    assert s.max_rel[s.steps.index(1e-10)] > 10 * e_best


def test_correct_network_passes_in_float32(tanh_problem):
    net, params, x, y = tanh_problem
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    # net.grad jitted: the same function, one XLA compile instead of ~70 eager
    # float32 op compiles (~1.5 s here); the eager path is the float64 test's.
    r = funcnn.gradcheck(net, p32, x.astype(jnp.float32), y, sweep_entries=0, manual_grad=jax.jit(net.grad))
    assert r.passed and r.dtype == "float32" and "float32" in r.title
    for row in r.rows:
        assert row.passed and row.tolerance <= MAX_TOL["float32"][row.reference], row
        assert row.cosine > 1 - 1e-6, row
    # the dtype argument overrides the params' dtype
    assert funcnn.gradcheck(net, params, x, y, dtype="float32", sweep_entries=0,
                            manual_grad=jax.jit(net.grad)).dtype == "float32"


def tanh_broken(z, y):
    return y * (1 - y)  # sigmoid's derivative formula, applied to tanh's output


def test_wrong_activation_derivative_is_caught_in_the_right_layers(tanh_problem):
    _, params, x, y = tanh_problem
    with broken_derivative("tanh", tanh_broken):
        net = funcnn.mlp(SIZES, hidden="tanh")
        r = funcnn.gradcheck(net, params, x, y, sweep_entries=0)
        # Layers 0 and 1 get their gradient through tanh'; the output layer's
        # gradient h^T dz does not. Every reference sees it.
        assert not r.passed
        assert failing(r) == {"[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"}
        for row in r.rows:
            assert row.passed == row.path.startswith("[2]"), row
        text = str(r)
        assert text.rstrip().endswith("FAILED") and text.count("FAIL") == 12 + 1
        # the report's numbers for a broken leaf, recomputed independently
        for path in ("[1]['W']", "[0]['b']"):
            max_abs, max_rel, cos, worst = manual_vs_reference(net, params, x, y, "tanh", path)
            row = next(r_ for r_ in r.rows if r_.path == path and r_.reference == "reverse")
            np.testing.assert_allclose([row.max_abs, row.max_rel, row.cosine], [max_abs, max_rel, cos], rtol=1e-8)
            assert row.worst_index == tuple(int(i) for i in worst)
            assert row.max_rel > 1e-2


@pytest.fixture(scope="module")
def relu_problem():
    params, x, y = random_problem(SIZES, "softmax", "cross_entropy", 6, jnp.float64, seed=1)
    return params, x, y


def test_relu_network_passes_without_kinks(relu_problem):
    params, x, y = relu_problem
    r = funcnn.gradcheck(funcnn.mlp(SIZES, hidden="relu"), params, x, y, sweep_entries=0)
    assert r.passed
    assert all(row.excluded == 0 for row in r.rows)  # no pre-activation near 0 here


def test_derivative_off_by_a_tenth_of_a_percent_is_caught_in_float64(relu_problem):
    params, x, y = relu_problem
    with broken_derivative("relu", lambda z, y: 1.001 * (z > 0).astype(z.dtype)):
        net = funcnn.mlp(SIZES, hidden="relu")
        r = funcnn.gradcheck(net, params, x, y, sweep_entries=0)
        manual = net.grad(params, x, y)
    reverse = jax.jit(jax.grad(lambda p: reference_loss(p, x, y, hidden="relu", output="softmax",
                                                        loss="cross_entropy")))(params)
    assert not r.passed and "FAILED" in str(r)
    assert failing(r) == {"[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"}
    by = {(row.path, row.reference): row for row in r.rows}
    for ref in REFERENCES:
        # Layer 1's gradient passes one scaled derivative (x 1.001), layer 0's two
        # (x 1.001^2), so the normwise error is exactly 1e-3 and 2.001e-3 up to the
        # reference's own error (finite differences: ~1e-9, well inside rtol 1e-5).
        for k in "Wb":
            np.testing.assert_allclose(by[(f"[1]['{k}']", ref)].max_rel, 1e-3, rtol=1e-5)
            np.testing.assert_allclose(by[(f"[0]['{k}']", ref)].max_rel, 1.001**2 - 1, rtol=1e-5)
            assert by[(f"[2]['{k}']", ref)].passed
        # a scaled gradient points the same way: the cosine alone would not catch it
        assert by[("[0]['W']", ref)].cosine > 1 - 1e-12
    # ... while a loose check (elementwise relative 1e-2) would pass it
    for a, b in zip(jax.tree.leaves(manual), jax.tree.leaves(reverse)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-2, atol=1e-12)


def test_broken_manual_grad_fails_only_its_leaf(tanh_problem):
    net, params, x, y = tanh_problem

    def doubled_last_bias(p, x, y, *, key=None):
        g = net.grad(p, x, y, key=key)
        return g[:-1] + [{"W": g[-1]["W"], "b": 2 * g[-1]["b"]}]

    r = funcnn.gradcheck(net, params, x, y, manual_grad=doubled_last_bias, sweep_entries=0)
    assert not r.passed
    assert failing(r) == {"[2]['b']"}
    for row in r.rows:
        if row.path == "[2]['b']":
            assert not row.passed
            np.testing.assert_allclose(row.max_rel, 1.0, rtol=1e-6)  # |2g - g| / |g|
        else:
            assert row.passed, row
    assert "FAILED" in str(r)


def test_kinked_entries_are_excluded_from_finite_differences_and_counted(relu_problem):
    params, x, y = relu_problem
    params = [dict(p) for p in params]
    net = funcnn.mlp(SIZES, hidden="relu")
    # Put sample 0's pre-activation of hidden unit j at +3e-8: active (so gradient
    # flows through it), but a finite-difference step h ~ 6e-6 on b_j or W_ij
    # crosses the kink.
    z = lambda b: x @ params[0]["W"] + b[None, :]  # [n, 5] first-layer pre-activations
    j = int(np.argmax(np.abs(np.asarray(params[1]["W"])).sum(1)))  # a unit that matters downstream
    params[0]["b"] = params[0]["b"].at[j].add(3e-8 - z(params[0]["b"])[0, j])
    assert abs(float(z(params[0]["b"])[0, j]) - 3e-8) < 1e-15

    r = funcnn.gradcheck(net, params, x, y, sweep_entries=0)
    assert r.passed
    by = {(row.path, row.reference): row for row in r.rows}
    assert by[("[0]['b']", "finite_diff")].excluded >= 1
    assert by[("[0]['W']", "finite_diff")].excluded >= 1
    assert all(row.excluded == 0 for row in r.rows if row.reference != "finite_diff")
    assert "at kinks skipped" in str(r)
    # The exclusion is needed: a plain central difference at the same step on b_j
    # is wrong by far more than the finite-difference tolerance (1e-6).
    loss = jax.jit(lambda b: reference_loss([{"W": params[0]["W"], "b": b}] + params[1:], x, y,
                                            hidden="relu", output="softmax", loss="cross_entropy"))
    h = gc.FD_STEP
    e = jnp.zeros(SIZES[1]).at[j].set(h)
    fd = (loss(params[0]["b"] + e) - loss(params[0]["b"] - e)) / (2 * h)
    exact = jax.jit(jax.grad(loss))(params[0]["b"])
    assert abs(float(fd - exact[j])) > 1e-3 * float(jnp.abs(exact).max())


@pytest.mark.parametrize("dtype", ["float16", jnp.float16, "bfloat16", "int32"])
def test_bad_dtype_raises(tanh_problem, dtype):
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        funcnn.gradcheck(*tanh_problem, dtype=dtype)


def test_the_three_references_are_computed_independently():
    # Forward mode, reverse mode and finite differences agree to rounding on a
    # right gradient, so a checker that copied one into another would still
    # pass every other test. In float32 they round differently: if the forward
    # column were reverse mode again, every leaf's error would be identical.
    x, y = funcnn.data.load_digits()
    net = funcnn.mlp([64, 16, 10], hidden="tanh")
    params = net.init(jax.random.key(0))
    rep = funcnn.gradcheck(net, params, x[:33], y[:33], max_entries=None)
    err = {(r.path, r.reference): r.max_abs for r in rep.rows}
    leaves = sorted({p for p, _ in err})
    assert len(leaves) == 4 and rep.passed
    assert any(err[(p, "forward")] != err[(p, "reverse")] for p in leaves), err
    assert any(err[(p, "finite_diff")] != err[(p, "reverse")] for p in leaves), err
