"""The training engine: steps, scanned epochs, fit, many models, divergence, resume."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import compilations, normwise_rel_err

import funcnn
from funcnn import data, optim, train


def _toy(n=50, d=6, classes=3, seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, d)), dtype), jnp.asarray(rng.integers(0, classes, n), jnp.int32)


NET = funcnn.mlp([6, 8, 3], hidden="tanh")


def test_train_state_is_a_pytree_and_init_is_deterministic():
    s1 = train.init_state(NET, optim.adam(1e-2), key=jax.random.key(0))
    s2 = train.init_state(NET, optim.adam(1e-2), key=jax.random.key(0))
    chex.assert_trees_all_equal(s1.params, s2.params)
    assert s1.step.dtype == jnp.int32 and int(s1.step) == 0
    assert len(jax.tree.leaves(s1)) > 4


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
def test_step_loop_equals_scanned_epoch(grad):
    x, y = _toy(n=22)  # 22 = 5 full batches of 4 and a partial batch of 2
    opt = optim.momentum(0.1, 0.9)
    state = train.init_state(NET, opt, key=jax.random.key(1), dtype=jnp.float64)
    copy = jax.tree.map(jnp.array, state)
    step = train.make_train_step(NET, opt, grad)
    perm = train.epoch_permutation(copy, 22)
    loop_losses = []
    for i in range(0, 22, 4):
        idx = perm[i:i + 4]
        copy, m = step(copy, x[idx], y[idx])
        loop_losses.append(float(m["loss"]))
    new, losses = train.make_epoch(NET, opt, batch_size=4, grad=grad)(state, x, y)
    assert losses.shape == (6,)
    np.testing.assert_allclose(np.asarray(losses), loop_losses, rtol=1e-12)
    assert normwise_rel_err(new.params, copy.params) <= 1e-12
    assert int(new.step) == 6


def test_drop_last_skips_the_partial_batch():
    x, y = _toy(n=22)
    state = train.init_state(NET, optim.sgd(0.1), key=jax.random.key(1), dtype=jnp.float64)
    new, losses = train.make_epoch(NET, optim.sgd(0.1), batch_size=4, drop_last=True)(state, x, y)
    assert losses.shape == (5,) and int(new.step) == 5
    assert train.steps_per_epoch(22, 4, drop_last=True) == 5 and train.steps_per_epoch(22, 4) == 6


def test_train_step_donates_the_state_buffers():
    opt = optim.sgd(0.1)
    state = train.init_state(NET, opt, key=jax.random.key(0))
    x, y = _toy(dtype=jnp.float32)
    new, _ = train.make_train_step(NET, opt)(state, x, y)
    assert state.params[0]["W"].is_deleted() and not new.params[0]["W"].is_deleted()


def test_manual_and_autodiff_training_agree():
    x, y = _toy(n=40)
    opt = optim.adam(1e-2)
    a, ha = train.fit(NET, opt, (x, y), epochs=5, batch_size=8, key=jax.random.key(3), grad="manual",
                      dtype=jnp.float64)
    b, hb = train.fit(NET, opt, (x, y), epochs=5, batch_size=8, key=jax.random.key(3), grad="autodiff",
                      dtype=jnp.float64)
    assert normwise_rel_err(a.params, b.params) <= 1e-10
    np.testing.assert_allclose(ha.train_loss, hb.train_loss, rtol=1e-10)


def test_fit_is_deterministic_and_learns():
    x, y = _toy(n=60)
    opt = optim.adam(3e-2)
    s1, h1 = train.fit(NET, opt, (x, y), epochs=30, batch_size=16, key=jax.random.key(0))
    s2, h2 = train.fit(NET, opt, (x, y), epochs=30, batch_size=16, key=jax.random.key(0))
    chex.assert_trees_all_equal(s1.params, s2.params)
    assert h1.train_loss == h2.train_loss
    assert h1.train_loss[-1] < 0.6 * h1.train_loss[0]  # random labels: memorised, from 1.25 to ~0.62
    s3, _ = train.fit(NET, opt, (x, y), epochs=1, batch_size=16, key=jax.random.key(1))
    assert not np.allclose(s3.params[0]["W"], s1.params[0]["W"])


def test_resume_is_bit_identical():
    x, y = _toy(n=30)
    net = funcnn.mlp([6, 8, 3], hidden="relu", dropout=0.2)  # dropout: the key schedule must resume too
    opt = optim.adam(1e-2)
    full, _ = train.fit(net, opt, (x, y), epochs=4, batch_size=7, key=jax.random.key(5))
    half, _ = train.fit(net, opt, (x, y), epochs=2, batch_size=7, key=jax.random.key(5))
    rest, _ = train.fit(net, opt, (x, y), epochs=2, batch_size=7, state=half)
    chex.assert_trees_all_equal(full, rest)


def test_validation_history_and_early_stopping_restores_best():
    x, y = _toy(n=80, seed=1)
    xv, yv = _toy(n=40, seed=2)  # unrelated labels: validation loss soon rises
    opt = optim.adam(5e-2)
    state, h = train.fit(NET, opt, (x, y), epochs=200, batch_size=16, key=jax.random.key(0),
                         validation=(xv, yv), early_stopping=3)
    assert h.stopped_early and len(h.train_loss) < 200
    assert len(h.val_loss) == len(h.val_accuracy) == len(h.train_loss)
    assert h.best_epoch == int(np.argmin(h.val_loss))
    assert len(h.val_loss) - 1 - h.best_epoch == 3
    np.testing.assert_allclose(train.evaluate(NET, state.params, xv.astype(jnp.float32), yv)["loss"],
                               min(h.val_loss), rtol=1e-6)


def test_divergence_names_epoch_and_step_and_keeps_the_last_finite_state():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(64, 1)) * 100, jnp.float32)
    net = funcnn.mlp([3, 16, 1], hidden="relu", output="identity", loss="mse")
    with pytest.raises(train.DivergenceError, match=r"epoch \d+, step \d+") as info:
        train.fit(net, optim.sgd(5.0), (x, y), epochs=50, batch_size=8, key=jax.random.key(0))
    err = info.value
    assert all(np.isfinite(np.asarray(l)).all() for l in jax.tree.leaves(err.state.params))
    steps = train.steps_per_epoch(64, 8)
    assert int(err.state.step) == err.epoch * steps + err.step
    # The state's own next step is the one that produced a non-finite loss.
    perm = train.epoch_permutation(train.TrainState(*err.state[:2], err.state.step - err.step, err.state.rng), 64)
    idx = perm[err.step * 8:(err.step + 1) * 8]
    assert not np.isfinite(float(net.loss(err.state.params, x[idx], y[idx])))
    assert len(err.history.train_loss) == err.epoch


def test_fit_many_equals_each_model_trained_alone():
    x, y = _toy(n=40)
    opt = optim.adam(1e-2)
    keys = jax.random.split(jax.random.key(0), 3)
    scales = jnp.array([1.0, 0.5, 2.0])
    states, hist = train.fit_many(NET, opt, (x, y), keys=keys, lr_scales=scales, epochs=3, batch_size=8,
                                  validation=(x, y), dtype=jnp.float64)
    assert hist["train_loss"].shape == (3, 3) and hist["val_accuracy"].shape == (3, 3)
    for k in range(3):
        alone, h = train.fit(NET, optim.adam(1e-2 * float(scales[k])), (x, y), epochs=3, batch_size=8,
                             key=keys[k], dtype=jnp.float64)
        assert normwise_rel_err(jax.tree.map(lambda a: a[k], states.params), alone.params) <= 1e-10
        np.testing.assert_allclose(hist["train_loss"][:, k], h.train_loss, rtol=1e-10)


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
def test_fit_many_per_model_l2_equals_networks_built_with_it(grad):
    x, y = _toy(n=43)  # a partial batch of 3: its penalty is l2 / (2 * 3)
    net0 = funcnn.mlp([6, 8, 3], hidden="tanh")
    l2s, scales = [0.0, 0.5, 3.0], [1.0, 2.0, 0.5]
    keys = jax.random.split(jax.random.key(2), 3)
    states, hist = train.fit_many(net0, optim.adam(1e-2), (x, y), keys=keys, lr_scales=scales, l2s=l2s, epochs=3,
                                  batch_size=8, grad=grad, dtype=jnp.float64, validation=(x[:9], y[:9]))
    for k in range(3):
        net = funcnn.mlp([6, 8, 3], hidden="tanh", l2=l2s[k])
        alone, h = train.fit(net, optim.adam(1e-2 * scales[k]), (x, y), epochs=3, batch_size=8, key=keys[k],
                             grad=grad, dtype=jnp.float64)
        assert normwise_rel_err(jax.tree.map(lambda a, k=k: a[k], states.params), alone.params) <= 1e-10
        np.testing.assert_allclose(hist["train_loss"][:, k], h.train_loss, rtol=1e-10)
        # the validation loss is the one that network reports: its own penalty included
        np.testing.assert_allclose(hist["val_loss"][-1, k], float(net.loss(alone.params, x[:9], y[:9])), rtol=1e-10)
    with pytest.raises(ValueError, match=r"l2s must be 3 finite numbers >= 0"):
        train.fit_many(net0, optim.adam(1e-2), (x, y), keys=keys, l2s=[0.0, -1.0, 0.0], epochs=1, batch_size=8)


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_fit_many_per_model_dropout_equals_networks_built_with_it(grad, dtype):
    """One program for several dropout rates: model k is the network built with dropouts[k]
    trained alone (rate 0: the network without dropout), its masks the same bits."""
    x, y = _toy(n=43, dtype=dtype)  # a partial batch of 3
    rates, scales = [0.0, 0.2, 0.5], [1.0, 2.0, 0.5]
    keys = jax.random.split(jax.random.key(3), 3)
    net0 = funcnn.mlp([6, 8, 8, 3], hidden="tanh", dropout=0.3)  # any rate > 0: replaced per model
    states, hist = train.fit_many(net0, optim.adam(1e-2), (x, y), keys=keys, lr_scales=scales, dropouts=rates,
                                  epochs=3, batch_size=8, grad=grad, dtype=dtype, validation=(x[:9], y[:9]))
    for k in range(3):
        net = funcnn.mlp([6, 8, 8, 3], hidden="tanh", dropout=rates[k])
        alone, h = train.fit(net, optim.adam(1e-2 * scales[k]), (x, y), epochs=3, batch_size=8, key=keys[k],
                             grad=grad, dtype=dtype)
        # float32 vmapped vs alone: the same operations (1e-5 leaves room for a backend's batched
        # matmuls to round differently; a wrong mask or rate moves the weights by ~1e-2)
        assert normwise_rel_err(jax.tree.map(lambda a, k=k: a[k], states.params), alone.params) <= \
            (1e-10 if dtype == jnp.float64 else 1e-5)
        np.testing.assert_allclose(hist["train_loss"][:, k], h.train_loss, rtol=1e-10 if dtype == jnp.float64 else 1e-5)
    # the rates matter: model 1 differs from model 0 (no dropout) by far more than rounding
    assert normwise_rel_err(jax.tree.map(lambda a: a[1], states.params),
                            jax.tree.map(lambda a: a[0], states.params)) > 1e-3


def test_fit_many_dropouts_are_checked_before_any_work():
    x, y = _toy(n=16)
    keys = jax.random.split(jax.random.key(0), 2)
    net = funcnn.mlp([6, 8, 3], hidden="tanh", dropout=0.5)
    for bad in ([0.1], [0.1, 1.0], [0.1, -0.1], [0.1, float("nan")]):
        with pytest.raises(ValueError, match=r"dropouts must be 2 rates in \[0, 1\), like keys; got "):
            train.fit_many(net, optim.sgd(0.1), (x, y), keys=keys, dropouts=bad, epochs=1, batch_size=8)
    with pytest.raises(ValueError, match=r"dropouts needs a network with dropout: build it with a rate > 0"):
        train.fit_many(NET, optim.sgd(0.1), (x, y), keys=keys, dropouts=[0.1, 0.2], epochs=1, batch_size=8)
    noise = funcnn.layers.Layer("noise", lambda k, d, t: (d, {}),
                                lambda p, x, *, key=None: (x if key is None else x + jax.random.normal(key, x.shape,
                                                                                                       x.dtype), None),
                                lambda p, c, dy: ({}, dy), funcnn.layers.spec("noise"), random=True)
    custom = funcnn.network([noise, funcnn.layers.dense(8, "tanh", dropout=0.5), funcnn.layers.dense(3)], input_size=6)
    with pytest.raises(ValueError, match=r"but noise draw\(s\) from the key in another way"):
        train.fit_many(custom, optim.sgd(0.1), (x, y), keys=keys, dropouts=[0.1, 0.2], epochs=1, batch_size=8)


def test_fit_many_shared_order_equals_fit_with_model_zeros_shuffle():
    x, y = _toy(n=43)  # 43 = 5 batches of 8 + a partial one of 3
    opt = optim.momentum(0.05, 0.9)
    keys = jax.random.split(jax.random.key(1), 3)
    states, hist = train.fit_many(NET, opt, (x, y), keys=keys, epochs=3, batch_size=8, dtype=jnp.float64,
                                  shared_order=True)
    rng0 = train.init_state(NET, opt, key=keys[0], dtype=jnp.float64).rng
    for k in range(3):
        start = train.init_state(NET, opt, key=keys[k], dtype=jnp.float64)._replace(rng=rng0)
        alone, h = train.fit(NET, opt, (x, y), epochs=3, batch_size=8, state=start, dtype=jnp.float64)
        assert normwise_rel_err(jax.tree.map(lambda a: a[k], states.params), alone.params) <= 1e-10
        np.testing.assert_allclose(hist["train_loss"][:, k], h.train_loss, rtol=1e-10)
    # ...and it is not the per-model order: model 1 trained alone with its own key differs.
    own, _ = train.fit(NET, opt, (x, y), epochs=3, batch_size=8, key=keys[1], dtype=jnp.float64)
    assert normwise_rel_err(jax.tree.map(lambda a: a[1], states.params), own.params) > 1e-3


@pytest.mark.parametrize("shared_order", [False, True])
def test_fit_many_never_copies_the_data_set(shared_order):
    # K models with K orders gather each step's rows: the compiled epoch's scratch
    # memory stays below ONE copy of x (a per-model shuffled copy would be K of them).
    net, opt, K, n = funcnn.mlp([64, 32, 10]), optim.sgd(0.1), 8, 4096
    states = jax.vmap(lambda k: train.init_state(net, opt, key=k))(jax.random.split(jax.random.key(0), K))
    x, y = jnp.zeros((n, 64), jnp.float32), jnp.zeros((n,), jnp.int32)
    epoch = train._many_epoch(net, opt, "manual", 32, False, shared_order)
    temp = epoch.lower(states, x, y, jnp.ones((K,)), None, None).compile().memory_analysis().temp_size_in_bytes
    assert temp < x.nbytes, (temp, x.nbytes)


def test_epochs_after_the_first_never_retrace():
    # The optimizer's update runs inside the scanned step: counting its traces
    # counts traces of the epoch. 5 epochs, then a second fit: traced once in all.
    x, y = _toy(n=40, dtype=jnp.float32)
    sgd = optim.sgd(0.1)
    opt = optim.GradientTransformation(sgd.init, chex.assert_max_traces(sgd.update, n=1))
    for seed in range(2):
        train.fit(NET, opt, (x, y), epochs=5, batch_size=8, key=jax.random.key(seed))
    # ...and the counter does fire: a new batch size is a new program, a second trace.
    with pytest.raises(AssertionError, match="traced"):  # chex: "...function was traced > 1 times..."
        train.fit(NET, opt, (x, y), epochs=1, batch_size=5, key=jax.random.key(0))


def test_second_fit_with_same_network_and_optimizer_compiles_nothing():
    x, y = _toy(n=40, dtype=jnp.float32)
    opt = optim.sgd(0.1)
    warm = funcnn.mlp([6, 8, 3], hidden="tanh")
    train.fit(warm, opt, (x, y), epochs=1, batch_size=8, key=jax.random.key(0), validation=(x, y))
    with compilations() as compiles:
        for seed in range(20):  # a sweep of 20 short fits: new keys, equal network and optimizer
            net = funcnn.mlp([6, 8, 3], hidden="tanh")
            train.fit(net, optim.sgd(0.1), (x, y), epochs=2, batch_size=8, key=jax.random.key(seed), validation=(x, y))
    assert compiles == []


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
@pytest.mark.parametrize("output,loss,l2,dropout", [("softmax", "cross_entropy", 0.3, 0.0),
                                                     ("identity", "mse", 0.0, 0.0),
                                                     ("softmax", "cross_entropy", 0.0, 0.5)])
def test_padded_epoch_equals_the_epoch_on_the_data_rows(grad, output, loss, l2, dropout):
    # 22 rows padded to 30 (one Feistel domain, 32): 5 full batches of 4, a partial batch of 2, 2 skipped steps
    x, y = _toy(n=22)
    if output == "identity":
        y = jnp.asarray(np.random.default_rng(1).normal(size=(22, 3)))
    net = funcnn.mlp([6, 8, 3], hidden="tanh", output=output, loss=loss, l2=l2, dropout=dropout)
    opt = optim.adam(1e-2)
    state = train.init_state(net, opt, key=jax.random.key(1), dtype=jnp.float64)
    pad = lambda a: jnp.concatenate([a, jnp.full((8, *a.shape[1:]), 7, a.dtype)])  # noqa: E731 any values
    want, got = state, state
    for _ in range(2):
        want, want_losses = train.make_epoch(net, opt, batch_size=4, grad=grad)(want, x, y)
        got, losses = train.make_padded_epoch(net, opt, batch_size=4, grad=grad)(got, pad(x), pad(y), 22)
    assert losses.shape == (8,) and np.all(np.asarray(losses[6:]) == 0)
    np.testing.assert_allclose(np.asarray(losses[:6]), np.asarray(want_losses), rtol=1e-12)
    assert normwise_rel_err(got.params, want.params) <= 1e-12
    assert int(got.step) == int(want.step) == 12
    chex.assert_trees_all_close(got.opt_state, want.opt_state, rtol=1e-12)
    np.testing.assert_array_equal(train.padded_step_sizes(22, 30, 4), [4, 4, 4, 4, 4, 2, 0, 0])


@pytest.mark.parametrize("grad,opt_name", [("manual", "adam"), ("manual", "momentum"), ("autodiff", "adamw")])
def test_padded_epoch_takes_learning_rate_l2_and_dropout_as_traced_scalars(grad, opt_name):
    # opt built with learning rate 1 and lr_scale=lr, a network with l2=0 and any dropout rate,
    # l2 and keep passed in: the padded epoch of the network and optimizer built with them
    # (the partial batch's penalty over its own 2 rows)
    x, y = _toy(n=22)
    pad = lambda a: jnp.concatenate([a, jnp.full((8, *a.shape[1:]), 7, a.dtype)])  # noqa: E731
    make = getattr(optim, opt_name)
    for l2, rate in ((0.3, 0.25), (0.0, 0.0), (1.5, 0.6)):
        net = funcnn.mlp([6, 8, 3], hidden="tanh", l2=l2, dropout=rate)
        state = train.init_state(net, make(3e-2), key=jax.random.key(1), dtype=jnp.float64)
        stand_in = funcnn.mlp([6, 8, 3], hidden="tanh", dropout=0.5)
        traced = dict(lr_scale=jnp.float64(3e-2), l2=jnp.float64(l2), keep=jnp.asarray(1.0 - rate))
        want, got = state, state
        for _ in range(2):
            want, want_losses = train.make_padded_epoch(net, make(3e-2), batch_size=4, grad=grad)(
                want, pad(x), pad(y), 22)
            got, losses = train.make_padded_epoch(stand_in, make(1.0), batch_size=4, grad=grad)(
                got, pad(x), pad(y), 22, **traced)
        np.testing.assert_allclose(np.asarray(losses), np.asarray(want_losses), rtol=1e-12)
        assert normwise_rel_err(got.params, want.params) <= 1e-12, (l2, rate)


def test_padded_epoch_compiles_once_for_every_number_of_rows():
    x, y = _toy(n=64, dtype=jnp.float32)
    opt = optim.sgd(0.1)
    sgd = optim.sgd(0.1)
    opt = optim.GradientTransformation(sgd.init, chex.assert_max_traces(sgd.update, n=1))
    run = train.make_padded_epoch(NET, opt, batch_size=8, grad="manual")
    state = train.init_state(NET, opt, key=jax.random.key(0))
    for n in (33, 40, 47, 64):  # every fold size of one padded shape: one trace in all
        state, _ = run(state, x, y, n)


class TestBadInput:
    x, y = _toy(n=20, dtype=jnp.float32)

    @pytest.mark.parametrize("kwargs,exc,match", [
        (dict(epochs=0), ValueError, r"epochs must be a positive integer; got 0"),
        (dict(batch_size=0), ValueError, r"batch_size"),
        (dict(batch_size=21), ValueError, r"batch_size"),
        (dict(grad="numeric"), ValueError, r"grad='numeric' is not allowed; choose one of \['manual', 'autodiff'\]"),
        (dict(early_stopping=2), ValueError, r"early_stopping needs validation"),
        (dict(key=None), ValueError, r"key is required"),
    ])
    def test_bad_arguments(self, kwargs, exc, match):
        args = dict(epochs=1, batch_size=4, key=jax.random.key(0)) | kwargs
        with pytest.raises(exc, match=match):
            train.fit(NET, optim.sgd(0.1), (self.x, self.y), **args)

    def test_bad_data(self):
        with pytest.raises(ValueError, match="same number of samples"):
            train.fit(NET, optim.sgd(0.1), (self.x, self.y[:5]), epochs=1, batch_size=4, key=jax.random.key(0))
        with pytest.raises(ValueError, match="NaN or inf"):
            train.fit(NET, optim.sgd(0.1), (self.x.at[0, 0].set(jnp.inf), self.y), epochs=1, batch_size=4,
                      key=jax.random.key(0))
        with pytest.raises(ValueError, match=r"labels in \[0, 7\]"):
            train.fit(NET, optim.sgd(0.1), (self.x, self.y.at[0].set(7)), epochs=1, batch_size=4,
                      key=jax.random.key(0))
        with pytest.raises(ValueError, match=r"x must have shape \(batch, 6\)"):
            train.fit(NET, optim.sgd(0.1), (self.x[:, :5], self.y), epochs=1, batch_size=4, key=jax.random.key(0))
        with pytest.raises(ValueError, match="empty"):
            train.fit(NET, optim.sgd(0.1), (self.x[:0], self.y[:0]), epochs=1, batch_size=4, key=jax.random.key(0))


def test_two_lines_separated_by_a_two_hidden_unit_network():
    x, y = data.make_two_lines(400, key=jax.random.key(0))
    net = funcnn.mlp([2, 2, 1], hidden="relu", output="sigmoid", loss="binary_cross_entropy")
    best = 0.0
    for seed in range(3):  # a 2-unit ReLU net can start with a dead unit; report the best of 3 inits
        state, _ = train.fit(net, optim.adam(5e-2), (x, y), epochs=150, batch_size=32, key=jax.random.key(seed))
        best = max(best, train.evaluate(net, state.params, x, y)["accuracy"])
    assert best == 1.0


def test_sine_regression_reaches_low_test_mse():
    x, y = data.make_sine(600, key=jax.random.key(0), noise=0.0)
    xt, yt = data.make_sine(200, key=jax.random.key(1), noise=0.0)
    net = funcnn.mlp([1, 32, 32, 1], hidden="tanh", output="identity", loss="mse")
    state, _ = train.fit(net, optim.adam(1e-2), (x, y), epochs=300, batch_size=64, key=jax.random.key(0))
    mse = float(jnp.mean((net.apply(state.params, xt) - yt) ** 2))
    assert mse < 1e-3, mse
