"""The network API: shapes, the custom_vjp loss, dropout, caching and bad input."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import broken_derivative, normwise_rel_err, random_problem, reference_loss

import funcnn


def test_init_shapes_dtypes_and_determinism():
    net = funcnn.mlp([64, 128, 10])
    p = net.init(jax.random.key(0))
    assert [(l["W"].shape, l["b"].shape) for l in p] == [((64, 128), (128,)), ((128, 10), (10,))]
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p))
    chex.assert_trees_all_equal(p, net.init(jax.random.key(0)))
    assert not np.allclose(p[0]["W"], net.init(jax.random.key(1))[0]["W"])
    assert all(float(jnp.abs(l["b"]).max()) == 0.0 for l in p)
    p64 = net.init(jax.random.key(0), dtype=jnp.float64)
    assert p64[0]["W"].dtype == jnp.float64


def test_apply_output_shapes_and_softmax_rows_sum_to_one():
    net = funcnn.mlp([64, 128, 10])
    p = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (5, 64), jnp.float32)
    out = net.apply(p, x)
    assert out.shape == (5, 10)
    np.testing.assert_allclose(np.asarray(out.sum(1)), 1.0, rtol=1e-6)
    assert net.logits(p, x).shape == (5, 10)
    assert net.predict(p, x).dtype == jnp.int32 and net.predict(p, x).shape == (5,)


def test_equal_specs_build_the_same_network_object():
    a = funcnn.mlp([4, 3, 2], hidden="tanh")
    b = funcnn.mlp((4, 3, 2), hidden="tanh", output="softmax", loss="cross_entropy", l2=0.0)
    assert a is b
    assert funcnn.spec_from_dict(a.spec.to_dict()) == a.spec
    assert funcnn.mlp([4, 3, 2], hidden="tanh", l2=0.1) is not a


@pytest.mark.parametrize("output,loss,int_labels", [
    ("softmax", "cross_entropy", True), ("softmax", "cross_entropy", False),
    ("sigmoid", "binary_cross_entropy", False), ("identity", "mse", False), ("softmax", "mse", False)])
def test_custom_vjp_loss_uses_manual_backward(variant, output, loss, int_labels):
    sizes = [6, 5, 4, 3]
    net = funcnn.mlp(sizes, hidden="tanh", output=output, loss=loss, l2=0.2)
    params, x, y = random_problem(sizes, output, loss, 7, jnp.float64, int_labels=int_labels)
    manual = net.grad(params, x, y)
    via_vjp = variant(jax.grad(net.loss_manual_vjp))(params, x, y)
    # Same arithmetic in the same order: equal up to rounding (exact when eager).
    assert normwise_rel_err(via_vjp, manual) <= 1e-14
    assert normwise_rel_err(via_vjp, jax.grad(net.loss)(params, x, y)) <= 1e-10
    np.testing.assert_allclose(float(net.loss_manual_vjp(params, x, y)), float(net.loss(params, x, y)), rtol=1e-14)
    # The cotangents for x (and float targets) come from the manual backward too.
    argnums = (1,) if int_labels else (1, 2)
    ours = jax.grad(net.loss_manual_vjp, argnums=argnums)(params, x, y)
    ref = jax.grad(lambda p, a, b: reference_loss(p, a, b, hidden="tanh", output=output, loss=loss, l2=0.2),
                   argnums=argnums)(params, x, y)
    assert normwise_rel_err(ours, ref) <= 1e-10


def test_manual_vjp_is_the_backward_jax_runs():
    # Break tanh's derivative (use sigmoid's formula on tanh's output): jax.grad
    # of loss_manual_vjp must follow the broken manual backward, while jax.grad
    # of the plain loss does not.
    p, x, y = random_problem([4, 5, 3], "softmax", "cross_entropy", 6, jnp.float64)
    with broken_derivative("tanh", lambda z, a: a * (1 - a)):
        net = funcnn.mlp([4, 5, 3], hidden="tanh")
        via_vjp = jax.jit(jax.grad(net.loss_manual_vjp))(p, x, y)
        assert normwise_rel_err(via_vjp, net.grad(p, x, y)) <= 1e-14
        assert normwise_rel_err(via_vjp, jax.grad(net.loss)(p, x, y)) > 1e-2


def test_custom_vjp_under_vmap_over_models_and_batches():
    sizes = [5, 4, 3]
    net = funcnn.mlp(sizes, hidden="gelu")
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.vmap(lambda k: net.init(k, dtype=jnp.float64))(keys)
    _, x, y = random_problem(sizes, "softmax", "cross_entropy", 7, jnp.float64)
    g = jax.jit(jax.vmap(jax.grad(net.loss_manual_vjp), in_axes=(0, None, None)))(params, x, y)
    for k in range(3):
        pk = jax.tree.map(lambda a: a[k], params)
        assert normwise_rel_err(jax.tree.map(lambda a: a[k], g), net.grad(pk, x, y)) <= 1e-14
    # vmap over independent batches of the same model
    xs = jnp.stack([x, 2 * x])
    gb = jax.vmap(net.grad, in_axes=(None, 0, None))(jax.tree.map(lambda a: a[0], params), xs, y)
    assert normwise_rel_err(jax.tree.map(lambda a: a[1], gb),
                            net.grad(jax.tree.map(lambda a: a[0], params), 2 * x, y)) <= 1e-14


class TestDropout:
    net = funcnn.mlp([20, 50, 50, 3], hidden="relu", dropout=0.3)

    def setup_method(self):
        self.p, self.x, self.y = random_problem([20, 50, 50, 3], "softmax", "cross_entropy", 64, jnp.float64)

    def test_evaluation_needs_no_key_and_is_deterministic(self):
        plain = funcnn.mlp([20, 50, 50, 3], hidden="relu")
        np.testing.assert_array_equal(self.net.apply(self.p, self.x), plain.apply(self.p, self.x))

    def test_training_drops_units_at_the_rate_with_inverted_scaling(self):
        z, out, cache = self.net.forward(self.p, self.x, key=jax.random.key(3))
        m = np.asarray(cache.masks[0])
        assert set(np.unique(m)) == {0.0, 1 / 0.7}
        assert abs((m == 0).mean() - 0.3) < 0.02  # 3,200 draws: std of the mean is 0.008
        assert not np.allclose(out, self.net.apply(self.p, self.x))

    def test_manual_backward_through_the_same_mask(self, variant):
        key = jax.random.key(7)
        g = variant(lambda p: self.net.grad(p, self.x, self.y, key=key))(self.p)
        ref = jax.grad(lambda p: self.net.loss(p, self.x, self.y, key=key))(self.p)
        assert normwise_rel_err(g, ref) <= 1e-10
        gv = jax.grad(lambda p: self.net.loss_manual_vjp(p, self.x, self.y, key=key))(self.p)
        assert normwise_rel_err(gv, ref) <= 1e-10
        # a different key gives a different mask, hence a different gradient
        g2 = self.net.grad(self.p, self.x, self.y, key=jax.random.key(8))
        assert normwise_rel_err(g2, g) > 1e-3

    def test_gradcheck_with_dropout_passes(self):
        small = funcnn.mlp([4, 6, 3], hidden="tanh", dropout=0.5)
        p, x, y = random_problem([4, 6, 3], "softmax", "cross_entropy", 5, jnp.float64)
        assert funcnn.gradcheck(small, p, x, y, key=jax.random.key(0), sweep_entries=0).passed


class TestBadInput:
    net = funcnn.mlp([4, 3, 2])
    p = net.init(jax.random.key(0))
    x = jnp.ones((5, 4), jnp.float32)

    def test_wrong_input_width(self):
        with pytest.raises(ValueError, match=r"x must have shape \(batch, 4\); got \(5, 3\)"):
            self.net.apply(self.p, jnp.ones((5, 3)))

    def test_single_sample_gets_a_hint(self):
        with pytest.raises(ValueError, match=r"x\[None, :\]"):
            self.net.apply(self.p, jnp.ones((4,)))

    def test_integer_x(self):
        with pytest.raises(TypeError, match="x must be a floating-point array"):
            self.net.apply(self.p, jnp.ones((5, 4), jnp.int32))

    def test_wrong_target_shape(self):
        with pytest.raises(ValueError, match=r"y must have shape \(5, 2\)"):
            self.net.loss(self.p, self.x, jnp.ones((5, 3)))
        with pytest.raises(ValueError, match=r"y \(integer labels\) must have shape \(5,\)"):
            self.net.grad(self.p, self.x, jnp.zeros((4,), jnp.int32))

    def test_labels_out_of_range(self):
        with pytest.raises(ValueError, match=r"y holds labels in \[0, 2\]; allowed are integers in \[0, 2\)"):
            self.net.loss(self.p, self.x, jnp.array([0, 1, 2, 0, 1]))
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            self.net.grad(self.p, self.x, jnp.array([0, 1, -1, 0, 1]))

    def test_integer_labels_need_cross_entropy(self):
        net = funcnn.mlp([4, 2], output="identity", loss="mse")
        with pytest.raises(TypeError, match="one_hot"):
            net.loss(net.init(jax.random.key(0)), self.x, jnp.zeros((5,), jnp.int32))

    def test_nan_inputs_eager(self):
        with pytest.raises(ValueError, match="x contains 1 NaN or inf"):
            self.net.apply(self.p, self.x.at[2, 1].set(jnp.nan))
        reg = funcnn.mlp([4, 2], output="identity", loss="mse")
        with pytest.raises(ValueError, match="y contains 10 NaN or inf"):
            reg.loss(reg.init(jax.random.key(0)), self.x, jnp.full((5, 2), jnp.inf, jnp.float32))

    def test_value_checks_are_skipped_under_jit(self):
        # Documented: inside jit, finite inputs and label ranges are the caller's duty.
        out = jax.jit(self.net.apply)(self.p, self.x.at[0, 0].set(jnp.nan))  # relu propagates NaN
        assert np.isnan(np.asarray(out[0])).all()

    def test_params_from_another_network(self):
        other = funcnn.mlp([4, 5, 2]).init(jax.random.key(0))
        with pytest.raises(ValueError, match=r"params\[0\] must be"):
            self.net.apply(other, self.x)
        with pytest.raises(ValueError, match="list of 2 layer dicts"):
            self.net.apply(self.p[:1], self.x)

    @pytest.mark.parametrize("kwargs,match", [
        (dict(hidden="rleu"), r"hidden='rleu' is not allowed; choose one of .*'relu'.*Did you mean 'relu'"),
        (dict(output="softmaxx"), r"output='softmaxx' is not allowed; choose one of \['identity', 'sigmoid', 'softmax'\]"),
        (dict(loss="hinge"), r"loss='hinge' is not allowed; choose one of \['mse', 'cross_entropy', 'binary_cross_entropy'\]"),
        (dict(init="glorot"), r"init='glorot' is not allowed; choose one of \['xavier_normal'"),
        (dict(output="sigmoid", loss="cross_entropy"), r"loss='cross_entropy' does not fit output='sigmoid'"),
        (dict(output="identity", loss="binary_cross_entropy"), r"does not fit output='identity'"),
        (dict(output="softmax", loss="binary_cross_entropy"), r"does not fit output='softmax'"),
        (dict(l2=-1.0), r"l2 must be a finite number >= 0; got -1.0"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\); got 1.0"),
        (dict(bias_init="ones"), r"bias_init='ones' is not allowed"),
    ])
    def test_bad_construction_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            funcnn.mlp([4, 3, 2], **kwargs)

    @pytest.mark.parametrize("sizes,match", [
        ([4], r"sizes must list at least two layer widths"),
        ([], r"sizes must list at least two"),
        ([4, 0, 2], r"sizes\[1\] must be a positive integer; got 0"),
        ([4, -3, 2], r"sizes\[1\] must be a positive integer; got -3"),
        ([4, 2.5, 2], r"sizes\[1\] must be a positive integer; got 2.5"),
    ])
    def test_bad_sizes(self, sizes, match):
        with pytest.raises(ValueError, match=match):
            funcnn.mlp(sizes)

    def test_shape_errors_are_raised_at_trace_time(self):
        with pytest.raises(ValueError, match="x must have shape"):
            jax.jit(self.net.apply).lower(self.p, jnp.ones((5, 3)))


def test_bfloat16_matmuls_agree_with_float32_within_bf16_rounding():
    # bf16 keeps 8 significant bits (relative rounding 2^-8 ~ 0.4% per product).
    # Summing 32 products with cancellation amplifies that in the first layer's
    # dW (measured: 3.0% relative L2 error, cosine 0.9996), so the stated
    # tolerances are: loss within 1%, each leaf's relative L2 error < 6% and
    # cosine similarity > 0.998 against float32.
    sizes = [64, 128, 10]
    p, x, y = random_problem(sizes, "softmax", "cross_entropy", 32, jnp.float32)
    f32 = funcnn.mlp(sizes, hidden="relu")
    bf16 = funcnn.mlp(sizes, hidden="relu", precision="bfloat16")
    (v32, g32), (v16, g16) = f32.value_and_grad(p, x, y), jax.jit(bf16.value_and_grad)(p, x, y)
    assert v16.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))
    assert abs(float(v16) - float(v32)) / float(v32) < 1e-2
    for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)):
        a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 6e-2
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.998
    assert normwise_rel_err(g16, g32) > 1e-4  # it really computed in bf16
    # The hand-derived bf16 backward follows the bf16 forward's autodiff (0.5% measured).
    assert normwise_rel_err(g16, jax.grad(bf16.loss)(p, x, y)) < 2e-2
