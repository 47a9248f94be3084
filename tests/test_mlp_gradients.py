"""Hand-derived backprop == jax.grad of an independently written loss, over the matrix:
every hidden activation x every allowed (output, loss) pair x depth (0, 1, 3 hidden
layers) x batch (1 and 7) x L2 off/on x float64/float32, eagerly.

Under jit the same comparison runs for every hidden activation x every pair at
depth 3 (and depth 0), batch 7, L2 on: each jitted case costs ~0.3 s of XLA
compilation on a 2-core CPU, so the whole matrix jitted (1,440 compilations)
would not fit in the suite's time; jit changes scheduling, not the maths.

Tolerances (normwise per leaf, max|manual - ref| / max|ref|): float64 1e-10,
float32 1e-4.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import HIDDEN_NAMES, PAIRS, normwise_rel_err, random_problem, record, reference_loss

import funcnn

TOL = {jnp.float64: 1e-10, jnp.float32: 1e-4}
DEPTHS = {0: [5, 3], 1: [5, 4, 3], 3: [5, 4, 6, 4, 3]}


def _check(variant, hidden, output, loss, depth, batch, l2, dtype, int_labels=True):
    sizes = DEPTHS[depth]
    net = funcnn.mlp(sizes, hidden=hidden, output=output, loss=loss, l2=l2)
    params, x, y = random_problem(sizes, output, loss, batch, dtype, seed=depth * 10 + batch,
                                  int_labels=int_labels)
    ref = lambda p: reference_loss(p, x, y, hidden=hidden, output=output, loss=loss, l2=l2)

    # Only the code under test is transformed; the reference always runs eagerly.
    v, g = variant(net.value_and_grad)(params, x, y)
    rv, rg = ref(params), jax.grad(ref)(params)
    chex.assert_trees_all_equal_structs(g, params)
    chex.assert_trees_all_equal_dtypes(g, params)
    err = normwise_rel_err(g, rg)
    record("manual vs jax.grad(ref)", dtype, err)
    assert err <= TOL[dtype], (hidden, output, loss, depth, batch, l2, dtype, err)
    np.testing.assert_allclose(float(v), float(rv), rtol=TOL[dtype])


EAGER = lambda f: f


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("output,loss", PAIRS)
@pytest.mark.parametrize("hidden", HIDDEN_NAMES)
def test_manual_grad_matches_autodiff_of_reference(hidden, output, loss, dtype):
    for depth in (1, 3):
        for batch in (1, 7):
            for l2 in (0.0, 0.3):
                _check(EAGER, hidden, output, loss, depth, batch, l2, dtype)
    for batch in (1, 7):  # depth 0: linear / logistic regression; no hidden activation
        for l2 in (0.0, 0.3):
            _check(EAGER, hidden, output, loss, 0, batch, l2, dtype)


@pytest.mark.parametrize("output,loss", PAIRS)
@pytest.mark.parametrize("hidden", HIDDEN_NAMES)
def test_manual_grad_matches_autodiff_under_jit(hidden, output, loss):
    _check(jax.jit, hidden, output, loss, 3, 7, 0.3, jnp.float64)
    if (output, loss) == ("softmax", "cross_entropy"):
        _check(jax.jit, hidden, output, loss, 3, 7, 0.3, jnp.float32)


@pytest.mark.parametrize("output,loss", PAIRS)
def test_no_hidden_layer_under_jit(output, loss):
    _check(jax.jit, "relu", output, loss, 0, 7, 0.3, jnp.float64)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hidden", ["tanh", "relu"])
def test_cross_entropy_with_soft_target_rows(variant, hidden, dtype):
    for batch in (1, 7):
        _check(variant, hidden, "softmax", "cross_entropy", 1, batch, 0.3, dtype, int_labels=False)
