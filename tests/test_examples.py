"""The worked examples of the reference material, recomputed through the public API.

The expected numbers are the published ones, typed in from the material.
"""
import jax
import jax.numpy as jnp
import numpy as np

import funcnn


def test_sigmoid_2_2_2_forward_pass():
    net = funcnn.mlp([2, 2, 2], hidden="sigmoid", output="sigmoid", loss="mse")
    # The material writes one row per unit; our W is [fan_in, fan_out], so transpose.
    params = [
        {"W": jnp.array([[0.3, -0.4], [0.2, 0.6]], jnp.float64).T, "b": jnp.array([0.25, 0.45], jnp.float64)},
        {"W": jnp.array([[0.7, 0.5], [-0.3, -0.1]], jnp.float64).T, "b": jnp.array([0.15, 0.35], jnp.float64)},
    ]
    y = net.apply(params, jnp.array([[2.0, 3.0]], jnp.float64))
    np.testing.assert_allclose(np.asarray(y[0]), [0.7122574322957417, 0.5330975738715015], rtol=0, atol=1e-15)


def _relu_231():
    net = funcnn.mlp([2, 3, 1], hidden="relu", output="identity", loss="mse")
    params = [
        {"W": jnp.array([[1.0, 2.0], [-3.0, 4.0], [1.0, -1.0]]).T, "b": jnp.array([1.0, 2.0, 0.0])},
        {"W": jnp.array([[1.0, 2.0, 3.0]]).T, "b": jnp.array([1.0])},
    ]
    return net, params, jnp.array([[1.0, 2.0]]), jnp.array([[3.0]])


def test_relu_2_3_1_backward_pass_and_one_step():
    net, params, x, t = _relu_231()
    assert float(net.apply(params, x)[0, 0]) == 21.0
    loss, g = net.value_and_grad(params, x, t)
    assert float(loss) == 162.0
    np.testing.assert_array_equal(np.asarray(g[0]["W"]).T, [[18, 36], [36, 72], [0, 0]])
    np.testing.assert_array_equal(np.asarray(g[0]["b"]), [18, 36, 0])
    np.testing.assert_array_equal(np.asarray(g[1]["W"]).ravel(), [108, 126, 0])
    np.testing.assert_array_equal(np.asarray(g[1]["b"]), [18])
    new = jax.tree.map(lambda p, d: p - 0.01 * d, params, g)
    np.testing.assert_allclose(np.asarray(new[0]["W"]).T, [[0.82, 1.64], [-3.36, 3.28], [1, -1]], atol=1e-15)
    np.testing.assert_allclose(np.asarray(new[0]["b"]), [0.82, 1.64, 0], atol=1e-15)
    np.testing.assert_allclose(np.asarray(new[1]["W"]).ravel(), [-0.08, 0.74, 3], atol=1e-15)
    np.testing.assert_allclose(np.asarray(new[1]["b"]), [0.82], atol=1e-15)


def test_relu_2_3_1_ten_step_trace():
    published = [21, 4.008, 3.4862270472192, 3.237581493847111, 3.1167096251148805, 3.0574708289572605,
                 3.028332293082342, 3.013975070347284, 3.006895129200314, 3.003402419052827]
    net, params, x, t = _relu_231()
    ours = []
    for _ in range(10):
        ours.append(float(net.apply(params, x)[0, 0]))
        params = jax.tree.map(lambda p, d: p - 0.01 * d, params, net.grad(params, x, t))
    np.testing.assert_allclose(ours, published, rtol=1e-13)


def test_identity_layers_collapse_to_one_affine_map_and_nonlinearity_breaks_it():
    net = funcnn.mlp([2, 3, 3, 3, 1], hidden="identity", output="identity", loss="mse")
    params = net.init(jax.random.key(0), dtype=jnp.float64)
    W_new, b_new = params[0]["W"], params[0]["b"]
    for p in params[1:]:
        W_new, b_new = W_new @ p["W"], b_new @ p["W"] + p["b"]
    x = jax.random.normal(jax.random.key(1), (9, 2), jnp.float64)
    np.testing.assert_allclose(np.asarray(net.apply(params, x)), np.asarray(x @ W_new + b_new[None]), atol=1e-13)
    relu = funcnn.mlp([2, 3, 3, 3, 1], hidden="relu", output="identity", loss="mse")
    assert np.max(np.abs(np.asarray(relu.apply(params, x) - (x @ W_new + b_new[None])))) > 1e-3


def test_400_25_10_parameter_count():
    net = funcnn.mlp([400, 25, 10], hidden="sigmoid", output="sigmoid", loss="binary_cross_entropy")
    assert net.num_params == 10285
    assert funcnn.count_params(net.init(jax.random.key(0))) == 10285
