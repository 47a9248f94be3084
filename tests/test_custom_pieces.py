"""Users' own pieces: activations, losses, output activations, layers and custom_vjp functions.

Each is accepted wherever a built-in name is, proven by funcnn.gradcheck, and a
deliberately wrong derivative is reported as a failure naming the piece.
Checkpoints record users' pieces by name and take their values back with
``custom=``. References are plain jnp (``jax.grad`` of the formulas written
out here).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import normwise_rel_err

import funcnn
from funcnn import activations, checkpoint, layers, losses, optim, train
from funcnn import gradcheck as gc
from funcnn.activations import Activation, OutputActivation
from funcnn.layers import Layer
from funcnn.losses import Loss

# softsign(z) = z / (1 + |z|), softsign'(z) = 1 / (1 + |z|)^2: smooth except its second derivative at 0.
SOFTSIGN = Activation("softsign", lambda z: z / (1 + jnp.abs(z)), lambda z, y: 1 / (1 + jnp.abs(z)) ** 2)
WRONG_SOFTSIGN = SOFTSIGN._replace(name="softsign_wrong", grad=lambda z, y: 1 / (1 + jnp.abs(z)))
# Mean absolute error, its gradient with respect to the output.
MAE = Loss("mae", lambda z, y, t: jnp.sum(jnp.abs(y - t)) / z.shape[0],
           lambda z, y, t: jnp.sign(y - t) / z.shape[0],
           dtargets=lambda z, y, t: -jnp.sign(y - t) / z.shape[0])
# A softmax with temperature 2 as a user's output activation.
SOFT2 = OutputActivation("softmax_t2", lambda z: jax.nn.softmax(z / 2, axis=-1),
                         lambda z, y, dy: y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True)) / 2,
                         decide=lambda y: jnp.argmax(y, axis=-1).astype(jnp.int32), smooth=True)


def scaled_tanh(a=1.7159, b=2 / 3, *, wrong=False):
    """LeCun's scaled tanh as a parameter-free layer."""
    def init(key, d, dtype):
        return d, {}

    def forward(params, x, *, key=None):
        y = a * jnp.tanh(b * x)
        return y, y

    def backward(params, y, dy):
        # d/dx a tanh(bx) = a b (1 - tanh^2) = b (a - y^2 / a)
        return {}, dy * (b if wrong else b) * ((a - y * y / a) if not wrong else (a - y * y))

    return Layer("scaled_tanh", init, forward, backward, layers.spec("scaled_tanh", a=a, b=b), smooth=True)


def maxout(width, k=2, *, wrong=False):
    """Maxout: k affine maps per output unit, the largest wins. Params {"W": [d, width*k], "b": [width*k]}."""
    def init(key, d, dtype):
        return width, {"W": jax.random.normal(key, (d, width * k), dtype) / float(np.sqrt(d)),
                       "b": jnp.zeros((width * k,), dtype)}

    def forward(params, x, *, key=None):
        z = (x @ params["W"] + params["b"][None, :]).reshape(x.shape[0], width, k)
        pick = jax.nn.one_hot(jnp.argmax(z, axis=-1), k, dtype=x.dtype)  # [n, width, k]
        return jnp.sum(z * pick, axis=-1), (x, pick)

    def backward(params, cache, dy):
        x, pick = cache
        dz = (dy[:, :, None] * pick).reshape(x.shape[0], width * k)
        dW = (x.T @ dz) * (2.0 if wrong else 1.0)
        return {"W": dW, "b": jnp.sum(dz, axis=0)}, dz @ params["W"].T

    return Layer(f"maxout({width}, k={k})", init, forward, backward, layers.spec("maxout", width=width, k=k))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(7, 4)))
    return x, jnp.asarray(rng.integers(0, 3, size=7)), jnp.asarray(rng.normal(size=(7, 3)))


def test_user_activation_works_in_mlp_and_matches_its_plain_formula(data):
    x, labels, _ = data
    net = funcnn.mlp([4, 5, 3], hidden=SOFTSIGN)
    p = net.init(jax.random.key(0), dtype=jnp.float64)

    def ref(p):
        h = x @ p[0]["W"] + p[0]["b"][None, :]
        h = h / (1 + jnp.abs(h))
        return -jnp.mean(jax.nn.log_softmax(h @ p[1]["W"] + p[1]["b"][None, :])[jnp.arange(7), labels])

    assert normwise_rel_err(net.grad(p, x, labels), jax.grad(ref)(p)) <= 1e-10
    assert net.spec.hidden == "softsign"
    assert funcnn.mlp([4, 5, 3], hidden=SOFTSIGN) is net  # cached by value


def test_check_activation_passes_a_right_derivative_and_names_a_wrong_one():
    assert gc.check_activation(SOFTSIGN).passed
    bad = gc.check_activation(WRONG_SOFTSIGN)
    assert not bad.passed and bad.failed_pieces == ("softsign_wrong",)
    assert "wrong derivative in: softsign_wrong" in str(bad)
    for name in activations.HIDDEN:
        assert gc.check_activation(name).passed, name
    for out in activations.OUTPUT.values():
        assert gc.check_activation(out).passed, out.name
    assert gc.check_activation(SOFT2).passed
    broken = SOFT2._replace(name="softmax_t2_wrong", vjp=lambda z, y, dy: y * (dy - jnp.sum(dy * y, -1, keepdims=True)))
    assert gc.check_activation(broken).failed_pieces == ("softmax_t2_wrong",)


def test_gradcheck_of_a_network_names_the_layer_with_the_wrong_piece(data):
    x, labels, _ = data
    net = funcnn.mlp([4, 5, 5, 3], hidden=[SOFTSIGN, WRONG_SOFTSIGN])
    p = net.init(jax.random.key(1), dtype=jnp.float64)
    r = funcnn.gradcheck(net, p, x, labels, sweep_entries=0)
    assert not r.passed
    # layer 1 uses the wrong derivative, so layers 0 and 1 get wrong gradients through it
    assert r.failed_pieces == ("dense(5, softsign)", "dense(5, softsign_wrong)")
    assert all(row.passed for row in r.rows if row.layer == 2)


def test_user_loss_with_output_gradient_and_check_loss(data):
    x, _, t = data
    net = funcnn.mlp([4, 6, 3], hidden="tanh", output="identity", loss=MAE)
    p = net.init(jax.random.key(2), dtype=jnp.float64)
    ref = jax.grad(lambda p: jnp.sum(jnp.abs(net.apply(p, x) - t)) / 7)(p)
    assert normwise_rel_err(net.grad(p, x, t), ref) <= 1e-12
    z = jnp.asarray(np.random.default_rng(3).normal(size=(7, 3)))
    assert gc.check_loss(MAE, "identity", z, t).passed
    wrong = MAE._replace(name="mae_wrong", grad=lambda z, y, t: jnp.sign(y - t))  # forgot the 1/n
    r = gc.check_loss(wrong, "identity", z, t)
    assert not r.passed and r.failed_pieces == ("mae_wrong after identity",)
    for name, out, tt in (("mse", "sigmoid", t), ("cross_entropy", "softmax", jnp.array([0, 1, 2, 1, 0, 2, 1])),
                          ("binary_cross_entropy", "sigmoid", (t > 0).astype(jnp.float64))):
        assert gc.check_loss(name, out, z, tt).passed, name


def test_user_loss_on_logits_must_name_its_outputs():
    hinge = Loss("squared_hinge", lambda z, y, t: jnp.sum(jnp.maximum(0, 1 - t * z) ** 2) / z.shape[0],
                 lambda z, y, t: -2 * t * jnp.maximum(0, 1 - t * z) / z.shape[0], wrt="logits", outputs=("identity",))
    assert funcnn.mlp([4, 2], output="identity", loss=hinge).criterion is hinge
    with pytest.raises(ValueError, match=r"loss='squared_hinge' does not fit output='softmax'"):
        funcnn.mlp([4, 2], loss=hinge)
    with pytest.raises(ValueError, match=r"wrt='gradient' is not allowed"):
        funcnn.mlp([4, 2], output="identity", loss=hinge._replace(wrt="gradient"))


def test_the_loss_table_has_no_fall_through():
    # A name that is not in the table is an error, never another loss.
    with pytest.raises(ValueError, match=r"loss='hinge' is not allowed"):
        losses.get("hinge", activations.output("softmax"))
    with pytest.raises(TypeError):
        losses.PAIRS["hinge"] = ("softmax",)  # derived, read-only: register a Loss value instead
    assert set(losses.PAIRS) == set(losses.LOSSES)


@pytest.mark.parametrize("piece,match", [
    (Activation("relu", jnp.tanh, lambda z, y: 1 - y * y), r"hidden 'relu': that name is funcnn's built-in"),
    (Activation("x", "tanh", lambda z, y: z), r"hidden 'x': fn must be a function"),
])
def test_user_pieces_are_checked_when_given(piece, match):
    with pytest.raises((TypeError, ValueError), match=match):
        funcnn.mlp([3, 4, 2], hidden=piece)


def test_user_layers_in_a_network_check_layer_and_wrong_backward(data):
    x, labels, _ = data
    net = funcnn.network([maxout(5), scaled_tanh(), layers.dense(3)], input_size=4)
    p = net.init(jax.random.key(3), dtype=jnp.float64)
    assert funcnn.gradcheck(net, p, x, labels, sweep_entries=0).passed
    _, mp = maxout(5).init(jax.random.key(4), 4, jnp.float64)
    assert gc.check_layer(maxout(5), mp, x).passed
    assert gc.check_layer(scaled_tanh(), {}, x).passed
    r = gc.check_layer(maxout(5, wrong=True), mp, x)
    assert not r.passed and r.failed_pieces == ("maxout(5, k=2)",)
    assert {row.path.split(" ")[1] for row in r.rows if not row.passed} == {"params['W']"}
    r = gc.check_layer(scaled_tanh(wrong=True), {}, x)
    assert not r.passed and r.failed_pieces == ("scaled_tanh",)
    # built-in layers pass check_layer too (the layer matrix is tests/test_layers.py)
    ln = layers.layer_norm()
    params = {"gain": jnp.array([1.5, -0.7, 2.0, 0.9]), "bias": jnp.array([0.1, -0.2, 0.3, 0.0])}
    assert gc.check_layer(ln, params, x).passed


def test_check_vjp_of_a_users_custom_vjp_function():
    @jax.custom_vjp
    def tanh_layer(W, x):
        return jnp.tanh(x @ W)

    def fwd(W, x):
        y = jnp.tanh(x @ W)
        return y, (W, x, y)

    def right(res, g):
        W, x, y = res
        d = g * (1 - y * y)
        return x.T @ d, d @ W.T

    def forgets_g(res, g):
        W, x, y = res
        d = 1 - y * y
        return x.T @ d, d @ W.T

    rng = np.random.default_rng(0)
    W, x = jnp.asarray(rng.normal(size=(3, 2))), jnp.asarray(rng.normal(size=(5, 3)))
    tanh_layer.defvjp(fwd, right)
    ok = gc.check_vjp(tanh_layer, W, x, smooth=True)
    assert ok.passed and len(ok.rows) == 3 * 2 * 3  # 3 cotangents x 2 inputs x 3 references
    tanh_layer.defvjp(fwd, forgets_g)
    bad = gc.check_vjp(tanh_layer, W, x, smooth=True)
    assert not bad.passed and bad.failed_pieces == ("tanh_layer",)
    assert all(not row.passed for row in bad.rows)
    with pytest.raises(TypeError, match="jax.custom_vjp"):
        gc.check_vjp(jnp.tanh, x)


def test_check_vjp_holds_integer_inputs_fixed_and_proves_funcnns_own_rule(data):
    x, labels, _ = data
    net = funcnn.mlp([4, 5, 3], hidden="tanh", l2=0.2)
    p = net.init(jax.random.key(5), dtype=jnp.float64)
    f = jax.custom_vjp(lambda params, x, y: net.loss(params, x, y))
    f.defvjp(lambda params, x, y: jax.vjp(net.loss_manual_vjp, params, x, y),
             lambda pull, g: pull(g))
    r = gc.check_vjp(f, p, x, labels, cotangents=2, smooth=True)
    assert r.passed
    assert {row.path.split(" ")[1] for row in r.rows} == {"args[0][0]['W']", "args[0][0]['b']", "args[0][1]['W']",
                                                         "args[0][1]['b']", "args[1]"}


def _train_and_save(net, tmp_path, x, y):
    opt = optim.adam(1e-2)
    state, _ = train.fit(net, opt, (x, y), epochs=2, batch_size=4, key=jax.random.key(0), dtype=jnp.float64)
    return checkpoint.save(tmp_path / "c.ckpt", state, spec=net), state


def test_checkpoint_round_trip_with_layer_norm_residual_and_a_user_activation(tmp_path, data):
    x, labels, _ = data
    net = funcnn.network([layers.dense(6, SOFTSIGN), layers.layer_norm(),
                          layers.residual(layers.dense(6, "tanh"), layers.dropout(0.1)), layers.dense(3)],
                         input_size=4, l2=0.1)
    path, state = _train_and_save(net, tmp_path, x, labels)
    with pytest.raises(checkpoint.CheckpointError, match=r"softsign.*pass them: checkpoint.load\(path, custom=\[\.\.\.\]\)"):
        checkpoint.load(path)
    ck = checkpoint.load(path, custom=[SOFTSIGN])
    assert ck.net is net
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), ck.params, state.params)
    np.testing.assert_array_equal(np.asarray(ck.net.apply(ck.params, x)), np.asarray(net.apply(state.params, x)))
    restored = checkpoint.restore_state(ck, optim.adam(1e-2))
    assert int(restored.step) == int(state.step)


def test_checkpoint_of_user_layers_and_loss_needs_them_back(tmp_path, data):
    x, _, t = data
    net = funcnn.network([maxout(4), scaled_tanh(), layers.dense(3)], input_size=4, output="identity", loss=MAE)
    path, state = _train_and_save(net, tmp_path, x, t)
    with pytest.raises(checkpoint.CheckpointError, match=r"maxout.*custom="):
        checkpoint.load(path, custom=[MAE])
    with pytest.raises(checkpoint.CheckpointError, match=r"custom="):
        checkpoint.load(path, custom=[maxout(4), scaled_tanh()])  # the loss is missing
    with pytest.raises(checkpoint.CheckpointError, match=r"maxout.*have spec"):
        checkpoint.load(path, custom=[maxout(4, k=3), scaled_tanh(), MAE])  # same name, other hyperparameters
    ck = checkpoint.load(path, custom=[maxout(4), scaled_tanh(), MAE])
    np.testing.assert_array_equal(np.asarray(ck.net.apply(ck.params, x)), np.asarray(net.apply(state.params, x)))


def test_one_accuracy_definition_for_multi_label_outputs():
    # Two samples, two sigmoid outputs: sample 0 right on both, sample 1 right on one of two.
    # Exact match: 1/2. (The per-entry mean would say 3/4.)
    net = funcnn.mlp([2, 2], output="sigmoid", loss="binary_cross_entropy")
    p = [{"W": jnp.array([[10.0, 0.0], [0.0, 10.0]]), "b": jnp.zeros(2)}]
    x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
    t = jnp.array([[1.0, 1.0], [1.0, 1.0]])
    assert train.evaluate(net, p, x, t)["accuracy"] == 0.5
    from funcnn import experiment
    assert experiment.evaluate_split(net, p, x, t)["accuracy"] == 0.5
    _, hist = train.fit(net, optim.sgd(0.0), (x, t), epochs=1, batch_size=2, validation=(x, t),
                        state=train.TrainState(p, optim.sgd(0.0).init(p), jnp.zeros((), jnp.int32),
                                               jax.random.key(0)), dtype=jnp.float64)
    assert hist.val_accuracy == [0.5]
