"""Training: a jitted train step, a whole epoch as one compiled call, ``fit``.

State is a ``TrainState(params, opt_state, step, rng)`` pytree. ``rng`` is the
run's base key and never changes; every random choice is derived from it and
the step counter, so a run is a pure function of (key, data, hyperparameters),
and a resumed run draws exactly what the uninterrupted run would have drawn::

    dropout mask of global step s:   fold_in(fold_in(rng, 0), s)
    shuffle of the epoch at step s:  shuffle.permutation(fold_in(fold_in(rng, 1), s), n)

An epoch (``make_epoch``) draws the epoch's order on device
(``funcnn.shuffle.permutation``: a keyed Feistel permutation, no sort),
reshapes it into ``n // batch_size`` rows of indices, gathers those
minibatches in one gather and ``lax.scan``s the step over them
(``fit_many`` gathers inside each step instead, so K models never hold K
shuffled copies of the data). The last
partial batch (``n % batch_size`` samples) is, by default, one more step of
its true size (its loss is the mean over its own samples, exactly what a
per-step loop does), so every sample is seen every epoch and the epoch's mean
loss weights each step by its batch size. ``drop_last=True`` skips it.
``make_padded_epoch`` is the same epoch over the first ``n`` rows of data
padded to a fixed size, with ``n`` a traced number: one compiled program for
every data set size padded alike (what scikit-learn's cross-validation folds
need, see ``funcnn.sklearn``).

Nothing here synchronises with the host inside compiled code: per-step losses
stay on device and ``fit`` fetches them once per epoch (needed to detect
divergence and for early stopping), after it has dispatched the next epoch,
so the device keeps working while the host looks at the losses and runs the
callback.

Data parallelism (``fit(..., mesh=mesh)``, see ``funcnn.parallel``): the data
and the state are replicated on the mesh, the epoch's permutation is the
single-device one, and each step's ``[B, d]`` minibatch is constrained to be
split along the mesh's ``"data"`` axis (each device gathers its own rows), so
each step's gradient is summed by XLA across devices (one all-reduce per
step). ``B`` must be a multiple of the
device count. A last partial batch whose size is not such a multiple runs
unsplit (every device computes it whole; same result, no speed-up for it).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from funcnn import _checks, activations, parallel, shuffle
from funcnn import data as _data
from funcnn import layers as _layers
from funcnn import losses as _losses
from funcnn.errors import FuncnnError, InvalidArgument, InvalidType
from funcnn.optim import GradientTransformation, apply_updates
from funcnn.typing import Array

GRADS = ("manual", "autodiff")


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree of arrays."""

    params: Any  # the network's params: one entry per layer (an MLP: {"W", "b"} each)
    opt_state: Any  # the optimizer's state pytree
    step: Array  # shape=(), int32: optimizer steps taken so far
    rng: Array  # the run's base key (constant; see module docstring)


class History(NamedTuple):
    """Per-epoch metrics returned by ``fit`` (plain Python lists and ints)."""

    train_loss: list  # mean training loss of each epoch (before each step's update)
    val_loss: list  # validation loss after each epoch ([] without validation)
    val_accuracy: list  # validation accuracy after each epoch (classification only)
    best_epoch: int | None  # epoch (0-based) with the lowest validation loss
    stopped_early: bool  # early stopping ended the run
    best: BestSoFar | None = None  # the best-so-far at the end (None without validation): resume passes it back


class BestSoFar(NamedTuple):
    """The lowest validation loss so far and what early stopping counts from it.

    Part of a run's state: a resumed run must continue with the best-so-far of
    the run it continues, or its first epoch would always be the "best".
    """

    loss: float  # lowest validation loss so far (inf before the first validation)
    epoch: int | None  # its epoch (0-based, counted from the run's start); None before the first
    params: Any  # its parameters; None before the first
    since: int  # epochs since it without improvement (early stopping stops when this reaches patience)


NO_BEST = BestSoFar(math.inf, None, None, 0)


def track_best(best: BestSoFar, epoch: int, val_loss: float, params) -> BestSoFar:
    """The one improvement rule: a strictly lower validation loss is the new best."""
    if val_loss < best.loss:
        return BestSoFar(val_loss, epoch, params, 0)
    return best._replace(since=best.since + 1)


class DivergenceError(FuncnnError, RuntimeError):
    """The loss became NaN or inf. ``state`` is the last state whose loss was finite."""

    def __init__(self, epoch: int, step: int, state: TrainState, history: History):
        super().__init__(
            f"training diverged: the loss became NaN or inf at epoch {epoch}, step {step} "
            f"(global step {int(state.step)}). The last finite state is kept in this "
            "error's .state (and .history). Try a lower learning rate or gradient clipping.")
        self.epoch, self.step, self.state, self.history = epoch, step, state, history


def init_state(net, opt: GradientTransformation, *, key, dtype=jnp.float32) -> TrainState:
    """A fresh ``TrainState``: parameters drawn from ``key``, optimizer state, step 0.

    Args:
      net: a network (``funcnn.mlp`` or ``funcnn.network``).
      opt: a ``GradientTransformation`` from ``funcnn.optim``.
      key: a ``jax.random`` key; split once into the init key and the run's rng.
      dtype: parameter dtype.
    """
    _checks.key("key", key)
    return _init_fn(net, opt, jnp.dtype(dtype))(key)


@functools.lru_cache(maxsize=128)
def _init_fn(net, opt, dtype):
    # One compiled call: drawn op by op, each random draw and zeros would be
    # its own small XLA compilation, which costs more than the epoch's on a cold start.
    def init(key):
        k_init, k_run = jax.random.split(key)
        params = net.init(k_init, dtype=dtype)
        return TrainState(params, opt.init(params), jnp.zeros((), jnp.int32), k_run)

    return jax.jit(init)


def _value_and_grad(net, grad: str):
    _checks.choice("grad", grad, GRADS)
    if grad == "manual":
        return net.value_and_grad
    return jax.value_and_grad(net.loss)


def _step_key(state: TrainState, dropout: bool, keep):
    """The step's dropout key (None without dropout), carrying ``keep`` when given (``layers.DropoutKey``)."""
    if not dropout:
        return None
    key = jax.random.fold_in(jax.random.fold_in(state.rng, 0), state.step)
    return key if keep is None else _layers.DropoutKey(key, keep)


def _with_l2(loss, g, params, l2, n):
    """``(loss, g)`` plus a traced L2 strength's penalty ``l2 / (2 n) sum W^2`` and its gradient (None: as they are)."""
    if l2 is None:
        return loss, g
    return loss + _losses.l2_penalty(params, l2, n), _losses.add_l2_grad(g, params, l2 / n)


def _scaled(updates, lr_scale):
    """``updates`` times a traced learning-rate factor (None: as they are)."""
    if lr_scale is None:
        return updates
    return jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)


def _step_body(net, opt, grad):
    """The pure train step ``(state, x, y, lr_scale, l2, keep) -> (state, loss)``.

    ``l2`` (a traced scalar, ``fit_many``'s per-model strength) adds the
    ``l2 / (2 B) * sum W^2`` penalty on top of the network's own, as a network
    built with that ``l2`` would: its gradient ``l2 / B * W``. ``keep`` (a
    traced scalar, ``fit_many``'s per-model ``1 - dropout``) rides on the
    step's dropout key (``layers.DropoutKey``): the network's dropout layers
    drop with probability ``1 - keep``, drawing the masks that layers built
    with that rate would.
    """
    value_and_grad = _value_and_grad(net, grad)
    dropout = net.random

    def body(state, x, y, lr_scale=None, l2=None, keep=None):
        loss, g = value_and_grad(state.params, x, y, key=_step_key(state, dropout, keep))
        loss, g = _with_l2(loss, g, state.params, l2, x.shape[0])
        updates, opt_state = opt.update(g, state.opt_state, state.params)
        params = apply_updates(state.params, _scaled(updates, lr_scale))
        return TrainState(params, opt_state, state.step + 1, state.rng), loss

    return body


@functools.lru_cache(maxsize=128)
def make_train_step(net, opt: GradientTransformation, grad: str = "manual"):
    """A jitted train step ``(state, x, y) -> (state, {"loss": loss})``.

    The loss is the one at the parameters before the update. The state's
    buffers are donated: do not reuse the ``state`` you passed in. Cached on
    ``(net, opt, grad)``: the same network and optimizer give the same
    compiled step.

    Args:
      net: a network (``funcnn.mlp`` or ``funcnn.network``).
      opt: a ``GradientTransformation``.
      grad: ``"manual"`` (hand-derived backprop) or ``"autodiff"`` (``jax.grad``).

    Raises:
      ValueError: unknown ``grad``.
    """
    body = _step_body(net, opt, grad)

    def step(state, x, y):
        state, loss = body(state, x, y)
        return state, {"loss": loss}

    return jax.jit(step, donate_argnums=0)


def _order_key(state: TrainState) -> Array:
    return jax.random.fold_in(jax.random.fold_in(state.rng, 1), state.step)


def epoch_permutation(state: TrainState, n: int) -> Array:
    """The sample order of the epoch that starts at ``state.step``: ``[n]`` int32."""
    return shuffle.permutation(_order_key(state), n)


def _epoch_body(net, opt, grad, batch_size, drop_last, num_steps=None, mesh=None, gather_per_step=False):
    """``epoch(state, x, y, lr_scale=None, order_key=None, l2=None, keep=None) -> (state, losses)``; see ``make_epoch``.

    ``order_key`` replaces the state's shuffle key (``fit_many(shared_order=True)``).

    ``gather_per_step=False`` gathers the whole shuffled set once (one copy of
    ``x``, the fastest on CPU: one large gather costs less than ``n / B``
    small ones); ``True`` gathers each step's rows inside the scan, never
    copying the set, which ``fit_many`` needs (K models, K orders: a
    per-epoch gather would hold K copies).
    """
    body = _step_body(net, opt, grad)
    split = rows = None  # shardings of [steps, B, ...] and [B, ...] batches on the mesh
    ndev = 1
    if mesh is not None:
        split = NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS))
        rows = NamedSharding(mesh, PartitionSpec(parallel.DATA_AXIS))
        ndev = parallel.num_data_devices(mesh)

    def take(i, x, y, sharding):
        # Rows i of x and y; i comes from a permutation: in bounds and unique.
        xy = tuple(a.at[i].get(mode="promise_in_bounds", unique_indices=True) for a in (x, y))
        return xy if sharding is None else tuple(jax.lax.with_sharding_constraint(a, sharding) for a in xy)

    def epoch(state, x, y, lr_scale=None, order_key=None, l2=None, keep=None):
        n = x.shape[0]
        nb, r = divmod(n, batch_size)
        full = nb * batch_size
        k = nb if num_steps is None else min(num_steps, nb)
        perm = shuffle.permutation(_order_key(state) if order_key is None else order_key, n)
        idx = perm[:k * batch_size].reshape(k, batch_size)  # [k, B]: step i trains on rows idx[i]
        if gather_per_step:
            def scan_step(s, i):
                return body(s, *take(i, x, y, rows), lr_scale, l2, keep)
            state, losses = jax.lax.scan(scan_step, state, idx)  # losses: [k]
        else:
            batches = take(idx, x, y, split)  # [k, B, ...] each
            state, losses = jax.lax.scan(lambda s, b: body(s, *b, lr_scale, l2, keep), state, batches)
        if r and not drop_last and (num_steps is None or num_steps > nb):
            state, loss = body(state, *take(perm[full:], x, y, rows if r % ndev == 0 else None),
                               lr_scale, l2, keep)
            losses = jnp.concatenate([losses, loss[None]])
        return state, losses

    return epoch


@functools.lru_cache(maxsize=128)
def make_epoch(net, opt: GradientTransformation, *, batch_size: int, grad: str = "manual",
               drop_last: bool = False, mesh=None):
    """One epoch as ONE compiled call: ``(state, x, y) -> (state, losses)``.

    Shuffles with the state's key, reshapes into minibatches on device and
    ``lax.scan``s the train step over them (see the module docstring for the
    last partial batch). ``losses`` holds each step's loss, ``[steps]``.
    The input state is not donated: ``fit`` keeps it to recover the last
    finite state if the loss diverges. Cached on its arguments.

    Args:
      net: a network (``funcnn.mlp`` or ``funcnn.network``).
      opt: a ``GradientTransformation``.
      batch_size: samples per step (``1 <= batch_size <= n``, checked by ``fit``).
      grad: ``"manual"`` or ``"autodiff"``.
      drop_last: skip the last partial batch instead of training on it.
      mesh: optional ``jax.sharding.Mesh`` with a ``"data"`` axis
        (``funcnn.parallel.data_mesh``): each minibatch is split across it and
        the returned state is replicated on it. Pass ``state``, ``x``, ``y``
        replicated on the mesh (``funcnn.parallel.replicate``).

    Raises:
      ValueError: ``batch_size`` not a multiple of the mesh's device count.
    """
    _checks.positive_int("batch_size", batch_size)
    _value_and_grad(net, grad)
    if mesh is not None:
        parallel.check_batch_size(mesh, batch_size)
    return _jit_on(mesh, _epoch_body(net, opt, grad, batch_size, drop_last, mesh=mesh))


def _weighted_value_and_grad(net, grad: str):
    """``(params, x [B, d], y, w [B], key) -> (loss, grads)`` of the rows where ``w`` is 1 alone.

    Equals the network's loss and gradient on the batch of those ``r = sum(w)``
    rows (mean over them, the L2 term's ``lambda / (2 r)``): rows are
    independent and the batch gradient of a mean loss is each row's own
    divided by the batch size, so the ``[B, m]`` ``dL/dz`` is rescaled by
    ``w * B / r`` and the L2 gradient by ``B / r``. With ``w`` all ones both
    factors are exactly 1: the same gradient as ``net.value_and_grad``.
    """
    fns = _losses.get(net.criterion, net.output)
    row_loss = jax.vmap(lambda z, yo, t: fns.value(z[None], yo[None], t[None]))  # [B] each row's loss

    def total(params, z, yout, y, w, r):
        v = jnp.where(w > 0, row_loss(z, yout, y), 0) @ w / r  # where: a padding row's NaN never leaks
        return v + _losses.l2_penalty(params, net.l2, r) if net.l2 else v

    def manual(params, x, y, w, key):
        z, yout, cache = net.forward(params, x, key=key)
        r, B = jnp.sum(w), x.shape[0]
        dz = jnp.where(w[:, None] > 0, fns.dlogits(z, yout, y), 0) * (w * (B / r))[:, None]
        grads, _ = net.backward(params, cache, dz, l2_scale=B / r)
        return total(params, z, yout, y, w, r), grads

    def autodiff(params, x, y, w, key):
        def f(p):
            z, yout, _ = net.forward(p, x, key=key)
            return total(p, z, yout, y, w, jnp.sum(w))
        return jax.value_and_grad(f)(params)

    _checks.choice("grad", grad, GRADS)
    return manual if grad == "manual" else autodiff


@functools.lru_cache(maxsize=128)
def make_padded_epoch(net, opt: GradientTransformation, *, batch_size: int, grad: str = "manual"):
    """``make_epoch`` over the first ``n`` rows of padded data: ONE compiled call for every ``n``.

    ``(state, x [N, d], y [N, ...], n, lr_scale=None, l2=None, keep=None) -> (state, losses [ceil(N / B)])``: rows
    ``n..N-1`` of ``x`` and ``y`` are padding (any values) and ``n`` is a traced
    int32 scalar, so data sets of different sizes padded to the same ``N``
    (cross-validation folds, a grid search's refits) share one program.
    Each epoch is ``make_epoch``'s on the ``n`` rows: the same order (when
    ``shuffle.domain_size(n) == shuffle.domain_size(N)``, see
    ``shuffle.padded_permutation``), the same full batches, the last partial
    batch of its true size (computed as a ``B``-row batch whose padding rows
    weigh 0), and the steps past the data skipped (their loss is 0; state,
    step count and optimizer moments untouched). So the result equals
    ``make_epoch``'s up to float rounding.

    The optional traced scalars make hyperparameters data, so a grid search
    over them compiles once (``funcnn.sklearn``), as ``fit_many``'s do:
    ``lr_scale`` multiplies every update (for ``funcnn.optim``'s optimizers,
    whose updates are linear in the learning rate, ``opt`` built with
    learning rate 1 and ``lr_scale = lr`` is ``opt`` built with ``lr``);
    ``l2`` adds ``l2 / (2 r) * sum W^2`` to each step's loss of ``r`` rows, as
    a network built with that ``l2`` has; ``keep`` replaces the dropout
    layers' rates by ``1 - keep`` (``layers.DropoutKey``; build ``net``
    with dropout > 0 where it applies).

    Args:
      net, opt, grad: as for ``make_epoch``.
      batch_size: ``B``, samples per step (``1 <= B <= n``).
    """
    _checks.positive_int("batch_size", batch_size)
    value_and_grad, dropout = _weighted_value_and_grad(net, grad), net.random
    B = batch_size

    def step(state, x, y, w, lr_scale, l2, keep):
        loss, g = value_and_grad(state.params, x, y, w, _step_key(state, dropout, keep))
        # the penalty over this step's r = sum(w) rows, as a network built with l2 has
        loss, g = _with_l2(loss, g, state.params, l2, jnp.sum(w))
        updates, opt_state = opt.update(g, state.opt_state, state.params)
        return TrainState(apply_updates(state.params, _scaled(updates, lr_scale)), opt_state, state.step + 1,
                          state.rng), loss

    def epoch(state, x, y, n, lr_scale=None, l2=None, keep=None):
        N = x.shape[0]
        S = -(-N // B)
        perm = shuffle.padded_permutation(_order_key(state), n, N)
        idx = jnp.concatenate([perm, jnp.arange(N, S * B, dtype=jnp.int32) % N]).reshape(S, B)  # [S, B]

        dtype = jax.tree.leaves(state.params)[0].dtype  # the loss's and the weights' dtype

        def run(s, rows, w):
            s, loss = step(s, x[rows], y[rows], w, lr_scale, l2, keep)
            return s, loss.astype(dtype)

        def scan_step(s, i):
            w = (i * B + jnp.arange(B, dtype=jnp.int32) < n).astype(dtype)  # [B]: 1 on data rows, 0 on padding
            return jax.lax.cond(w[0] > 0, run, lambda s, rows, w: (s, jnp.zeros((), dtype)), s, idx[i], w)
        return jax.lax.scan(scan_step, state, jnp.arange(S, dtype=jnp.int32))

    return jax.jit(epoch)


def padded_step_sizes(n: int, size: int, batch_size: int) -> np.ndarray:
    """Samples in each step of ``make_padded_epoch`` over ``n`` of ``size`` rows: ``[ceil(size / B)]``."""
    sizes = np.zeros(-(-size // batch_size), np.int64)
    real = _step_sizes(n, batch_size, False)
    sizes[:len(real)] = real
    return sizes


def _jit_on(mesh, fn):
    """``jax.jit(fn)``; on a mesh, every output is replicated on it."""
    if mesh is None:
        return jax.jit(fn)
    return jax.jit(fn, out_shardings=parallel.replicated_sharding(mesh))


@functools.lru_cache(maxsize=128)
def _epoch_then_evaluate(net, opt, batch_size, grad, drop_last, mesh):
    """``fit``'s epoch with validation: ``(state, x, y, xv, yv) -> (state, losses, (loss, accuracy))``.

    One program instead of ``make_epoch`` followed by the evaluation: each
    XLA compilation has a fixed cost (about 0.1 s on CPU), which a cold
    start pays once instead of twice. ``fit`` has checked the arguments.
    """
    epoch, evaluate = _epoch_body(net, opt, grad, batch_size, drop_last, mesh=mesh), _evaluate_body(net)

    def run(state, x, y, xv, yv):
        state, losses = epoch(state, x, y)
        return state, losses, evaluate(state.params, xv, yv)

    return _jit_on(mesh, run)


def _step_sizes(n: int, batch_size: int, drop_last: bool) -> np.ndarray:
    """Samples in each step of an epoch: full batches, then the partial one unless dropped."""
    r = n % batch_size
    return np.array([batch_size] * (n // batch_size) + ([r] if r and not drop_last else []))


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of optimizer steps in one epoch over ``n`` samples."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def _evaluate_body(net):
    def evaluate(params, x, y):
        loss = net.loss(params, x, y)
        if net.output.decide is None:  # regression: no accuracy
            return loss, jnp.nan
        return loss, activations.accuracy(net.output, net.apply(params, x), y)

    return evaluate


@functools.lru_cache(maxsize=128)
def _eval_fn(net):
    return jax.jit(_evaluate_body(net))


def evaluate(net, params, x, y) -> dict:
    """Loss and, for classifiers, accuracy of ``params`` on ``(x, y)``, without dropout.

    Accuracy is ``funcnn.activations.accuracy``: exact match (for several
    sigmoid outputs every output must be right).

    Returns:
      ``{"loss": float, "accuracy": float}`` (no accuracy for regression outputs).

    Raises:
      ValueError (a funcnn error): integer labels outside ``[0, net.output_size)``.
    """
    if jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):  # out of range: a NaN loss, not an error, if compiled
        _checks.labels_in_range("y", y, net.output_size)
    loss, acc = jax.device_get(_eval_fn(net)(params, x, y))
    out = {"loss": float(loss)}
    if net.output.decide is not None:
        out["accuracy"] = float(acc)
    return out


@functools.lru_cache(maxsize=256)
def _check_shapes(net, dtype, x, y):
    """The network's trace-time shape checks on ``x``, ``y`` (``ShapeDtypeStruct``s), before any work.

    Cached: tracing ``init`` and ``loss`` for shapes costs milliseconds, which
    a sweep of short fits would pay on every call. A failing check raises and
    is not cached.
    """
    params = jax.eval_shape(functools.partial(net.init, jax.random.key(0), dtype=dtype))
    jax.eval_shape(net.loss, params, x, y)


def _prepare(net, data, dtype, name):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise InvalidArgument(f"{name} must be an (x, y) pair; got {type(data).__name__}.")
    x, y = data
    _data.check_xy(x, y, name_x=f"{name} x", name_y=f"{name} y")
    for what, a in ((f"{name} x", x), (f"{name} y", y)):
        kind = np.dtype(getattr(a, "dtype", None) or np.asarray(a).dtype).kind
        if kind not in "biuf":
            raise InvalidType(f"{what} must hold numbers; got dtype {np.asarray(a).dtype}.")
    x = jnp.asarray(x)
    _checks.floating(f"{name} x", x)
    y = jnp.asarray(y)
    x = x.astype(dtype)
    if jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(dtype)
    _check_shapes(net, jnp.dtype(dtype), jax.ShapeDtypeStruct(x.shape, x.dtype),
                  jax.ShapeDtypeStruct(y.shape, y.dtype))
    _checks.finite(f"{name} y", y) if jnp.issubdtype(y.dtype, jnp.floating) else \
        _checks.labels_in_range(f"{name} y", y, net.output_size)
    return x, y


def fit(net, opt: GradientTransformation, data, *, epochs: int, batch_size: int, key=None,
        validation=None, grad: str = "manual", drop_last: bool = False,
        early_stopping: int | None = None, state: TrainState | None = None,
        callback: Callable[[int, dict, TrainState], None] | None = None, dtype=jnp.float32, mesh=None,
        first_epoch: int = 0, best: BestSoFar | None = None):
    """Trains ``net`` with ``opt`` on ``data = (x, y)``; each epoch is one compiled call.

    Args:
      net: a network (``funcnn.mlp`` or ``funcnn.network``).
      opt: a ``GradientTransformation``, e.g. ``funcnn.optim.adam(1e-3)``.
      data: ``(x [n, d], y)``, targets as for ``net.loss``.
      epochs: number of epochs (> 0).
      batch_size: samples per step, ``1 <= batch_size <= n``.
      key: ``jax.random`` key for init, shuffling and dropout (required unless
        ``state`` is given).
      validation: optional ``(x_val, y_val)``, evaluated after every epoch.
      grad: ``"manual"`` (hand-derived backprop, default) or ``"autodiff"``.
      drop_last: skip each epoch's last partial batch (default: train on it).
      early_stopping: patience in epochs: stop when the validation loss has
        not improved for this many epochs, and return the best parameters.
      state: a ``TrainState`` to continue from (resume); ``key`` is then unused.
      callback: called as ``callback(epoch, metrics, state)`` after each epoch,
        with ``metrics = {"epoch", "train_loss", "val_loss"?, "val_accuracy"?}``
        and the epoch's ``TrainState``; scripts print progress and save
        checkpoints from it. The library prints nothing.
      dtype: parameter and input dtype (float32 default).
      mesh: optional ``jax.sharding.Mesh`` with a ``"data"`` axis
        (``funcnn.parallel.data_mesh()``): data-parallel training. Data,
        validation data and state are replicated on the mesh (a global array
        split across processes, ``parallel.shard_rows``, is all-gathered once),
        each step's batch is split across the devices and the returned state is
        replicated on the mesh. Gives the single-device result for the same
        ``batch_size`` up to float rounding. In multi-process runs every
        process calls ``fit`` with the same arguments.
      first_epoch: the number of the first epoch of this call (resume: the
        epochs already done); callback epochs, ``History.best_epoch`` and
        ``best.epoch`` count from it.
      best: the ``BestSoFar`` of the run this call continues (resume: the
        previous call's ``history.best``), so the best parameters and the
        early-stopping patience carry over exactly; default: none yet.
        ``fit(..., epochs=a)`` then ``fit(..., epochs=b, state=s, best=h.best,
        first_epoch=a)`` gives exactly ``fit(..., epochs=a + b)``.

    Returns:
      ``(state, history)``: the final ``TrainState`` (``state.params`` works with
      ``net.apply``; with early stopping, the best epoch's parameters) and a
      ``History``. Deterministic for a given key.

    Raises:
      ValueError / TypeError: bad arguments or data (before any work), or a
        ``batch_size`` that is not a multiple of the mesh's device count.
      DivergenceError: the loss became NaN/inf; names the epoch and step and
        carries the last finite state.

    Example (XOR, which no linear model separates)::

        >>> import jax, funcnn
        >>> from funcnn import data, optim, train
        >>> x, y = data.make_xor(64, key=jax.random.key(0), noise=0.1)
        >>> net = funcnn.mlp([2, 8, 1], hidden="tanh", output="sigmoid", loss="binary_cross_entropy")
        >>> state, history = train.fit(net, optim.adam(0.05), (x, y), epochs=100,
        ...                            batch_size=16, key=jax.random.key(1))
        >>> len(history.train_loss), history.train_loss[-1] < 0.1 * history.train_loss[0]
        (100, True)
        >>> float((net.predict(state.params, x) == y.astype("int32")).mean())
        1.0
    """
    epochs = _checks.positive_int("epochs", epochs)
    x, y, val, batch_size, state = _fit_inputs(
        net, opt, data, validation, batch_size=batch_size, key=key, grad=grad, early_stopping=early_stopping,
        state=state, dtype=dtype, mesh=mesh, first_epoch=first_epoch, best=best)
    if val is None:
        run_epoch = make_epoch(net, opt, batch_size=batch_size, grad=grad, drop_last=drop_last, mesh=mesh)
    else:
        run_epoch = functools.partial(_epoch_then_evaluate(net, opt, batch_size, grad, drop_last, mesh),
                                      xv=val[0], yv=val[1])
    replay = functools.partial(_replay, net, opt, grad, batch_size, drop_last, mesh=mesh)
    return _epoch_loop(run_epoch, replay, net, state, x, y, epochs=range(first_epoch, first_epoch + epochs),
                       sizes=_step_sizes(x.shape[0], batch_size, drop_last), validated=val is not None,
                       best=NO_BEST if best is None else best, callback=callback, early_stopping=early_stopping)


def _fit_inputs(net, opt, data, validation, *, batch_size, key, grad, early_stopping, state, dtype, mesh,
                first_epoch, best):
    """``fit``'s arguments checked and prepared: ``(x, y, (xv, yv) or None, batch_size, state)``.

    Every check runs here, before anything is compiled; with a mesh, the data
    and the state come back replicated on it.
    """
    _checks.choice("grad", grad, GRADS)
    if isinstance(first_epoch, bool) or not isinstance(first_epoch, (int, np.integer)) or first_epoch < 0:
        raise InvalidArgument(f"first_epoch must be an integer >= 0; got {first_epoch!r}.")
    if best is not None and not isinstance(best, BestSoFar):
        raise InvalidType(f"best must be a train.BestSoFar (a previous history.best) or None; "
                          f"got {type(best).__name__}.")
    if mesh is not None:
        parallel.check_batch_size(mesh, _checks.positive_int("batch_size", batch_size))
        # Rows split across processes are gathered first: _prepare checks values on the host.
        data, validation = (_gather_rows(mesh, d) for d in (data, validation))
    x, y = _prepare(net, data, dtype, "data")
    batch_size = _data.check_batch_size(batch_size, x.shape[0])
    val = None if validation is None else _prepare(net, validation, dtype, "validation")
    if mesh is not None:  # every device holds the whole set: the shuffle stays the 1-device one
        x, y = parallel.replicate(mesh, (x, y))
        if val is not None:
            val = parallel.replicate(mesh, val)
    if early_stopping is not None:
        _checks.positive_int("early_stopping", early_stopping)
        if validation is None:
            raise InvalidArgument("early_stopping needs validation=(x_val, y_val) to watch.")
    if state is None:
        if key is None:
            raise InvalidArgument("key is required (a jax.random key) unless a state is given to resume.")
        state = init_state(net, opt, key=key, dtype=dtype)
    elif not _checks.same_structure(state.opt_state, jax.eval_shape(opt.init, state.params)):
        raise InvalidArgument("state.opt_state does not fit opt: this state was made by a different optimizer "
                              "(or chain); continue a run with the optimizer that made its state.")
    if mesh is not None:
        state = parallel.replicate(mesh, state)
    return x, y, val, batch_size, state


def _epoch_loop(run_epoch, replay, net, state, x, y, *, epochs, sizes, validated, best, callback,
                early_stopping):
    """``fit``'s loop over ``epochs`` (a range of epoch numbers): one compiled call and one host sync each.

    ``replay(num_steps, state, x, y)`` recomputes the state before a step whose
    loss was not finite (for ``DivergenceError``).
    """
    history = History([], [], [], best.epoch, False)
    pending = run_epoch(state, x, y)
    for epoch in epochs:
        new_state, *fetched = pending  # fetched: [losses] or [losses, (val loss, val acc)]
        if epoch + 1 < epochs.stop:
            # Dispatch the next epoch before waiting on this one: the device never
            # idles while the host checks losses or runs the callback. If this epoch
            # diverged or stops the run early, that next epoch is discarded unseen.
            pending = run_epoch(new_state, x, y)
        fetched = jax.device_get(fetched)  # the one host sync per epoch
        losses = fetched[0]
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmax(~np.isfinite(losses)))
            raise DivergenceError(epoch, bad, replay(bad, state, x, y), history)
        state = new_state
        metrics = {"epoch": epoch, "train_loss": float(np.sum(losses * sizes) / np.sum(sizes))}
        history.train_loss.append(metrics["train_loss"])
        if validated:
            val_loss, val_acc = (float(v) for v in fetched[1])
            metrics["val_loss"] = val_loss
            history.val_loss.append(val_loss)
            if net.output.decide is not None:
                metrics["val_accuracy"] = val_acc
                history.val_accuracy.append(val_acc)
            best = track_best(best, epoch, val_loss, state.params)
            history = history._replace(best_epoch=best.epoch, best=best)
        if callback is not None:
            callback(epoch, metrics, state)
        if early_stopping is not None and best.since >= early_stopping:
            history = history._replace(stopped_early=True)
            break
    if early_stopping is not None and best.params is not None:
        state = state._replace(params=best.params)
    return state, history


def _replay(net, opt, grad, batch_size, drop_last, num_steps, state, x, y, mesh=None):
    """The state after the first ``num_steps`` steps of the epoch starting at ``state``.

    Runs the same epoch body truncated to ``num_steps`` (compiled only when a
    run diverges), so the state is the one the full epoch had before the step
    whose loss was not finite.
    """
    if num_steps == 0:
        return state
    fn = jax.jit(_epoch_body(net, opt, grad, batch_size, drop_last, num_steps=num_steps, mesh=mesh))
    return fn(state, x, y)[0]


def _gather_rows(mesh, data):
    """``(x, y)`` with arrays spread over several processes replicated on ``mesh``."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return data  # None, or for _prepare to reject
    return tuple(parallel.replicate(mesh, a) if isinstance(a, jax.Array) and not a.is_fully_addressable
                 else a for a in data)


@functools.lru_cache(maxsize=64)
def _many_epoch(net, opt, grad, batch_size, drop_last, shared_order=False):
    body = _epoch_body(net, opt, grad, batch_size, drop_last, gather_per_step=True)
    # Models differ in state (seed), learning-rate factor, L2 strength and keep
    # probability (None: the network's own for all); the data is shared and each
    # step gathers each model's rows (no per-model copy of the set).
    many = jax.vmap(body, in_axes=(0, None, None, 0, None, 0, 0))
    if not shared_order:
        return jax.jit(lambda states, x, y, lr_scales, l2s, keeps: many(states, x, y, lr_scales, None, l2s, keeps))

    def epoch(states, x, y, lr_scales, l2s, keeps):
        # Model 0's order for all: each step's batch is one [B, d] array, so
        # XLA computes the first layer of all K models as one [B, d] x [d, K*h] matmul.
        return many(states, x, y, lr_scales, _order_key(jax.tree.map(lambda a: a[0], states)), l2s, keeps)

    return jax.jit(epoch)


def _dropout_keeps(net, dropouts, K: int):
    """``[K]`` keep probabilities ``1 - dropouts`` for ``fit_many``, after checking them and the network."""
    rates = np.asarray(dropouts, np.float64)
    if rates.shape != (K,) or not np.all(np.isfinite(rates) & (rates >= 0) & (rates < 1)):
        raise InvalidArgument(f"dropouts must be {K} rates in [0, 1), like keys; got {np.asarray(dropouts).tolist()}.")
    if not net.random:
        raise InvalidArgument("dropouts needs a network with dropout: build it with a rate > 0 (any) in the "
                              "layers whose rate the models vary, e.g. funcnn.mlp(..., dropout=0.5).")
    other = [layer.name for layer in net.layers if layer.random and not layer.dropout_key]
    if other:
        raise InvalidArgument(f"dropouts sets the rate of dropout layers, but {', '.join(other)} draw(s) from "
                              "the key in another way (Layer.dropout_key is False): train these models one by one.")
    return _layers.keep_of(rates)


def fit_many(net, opt: GradientTransformation, data, *, keys, epochs: int, batch_size: int,
             lr_scales=None, l2s=None, dropouts=None, validation=None, grad: str = "manual",
             drop_last: bool = False, dtype=jnp.float32, shared_order: bool = False):
    """Trains K models at once in one compiled program (``vmap`` over models).

    Model k is initialised and shuffled from ``keys[k]`` and its updates are
    multiplied by ``lr_scales[k]``, which for every optimizer in
    ``funcnn.optim`` (updates linear in the learning rate) is training with
    learning rate ``lr * lr_scales[k]``. Each model equals the same network
    trained alone by ``fit`` with that key (up to float rounding). With
    ``l2s``, model k also has the L2 penalty ``l2s[k] / (2 B) * sum W^2`` on
    top of the network's own: build ``net`` with ``l2=0`` and model k equals
    that network built with ``l2=l2s[k]`` trained alone. With ``dropouts``,
    every dropout layer of model k drops with probability ``dropouts[k]``
    instead of its own rate (a ``layers.DropoutKey`` on the step's key): build
    ``net`` with dropout (any rate > 0) where the rates vary, and model k
    equals that network built with rate ``dropouts[k]`` trained alone
    (``dropouts[k] = 0``: the network without dropout; the same masks, so
    the same numbers up to rounding).

    With ``shared_order=True`` every model sees the batches in model 0's
    order (common random numbers: models then differ only in their
    initialisation, dropout and learning rate, which is what a sweep
    compares). Each step then has one ``[B, d]`` batch for all models, so the
    first layer of all K models is one matmul, which is faster. Without
    dropout, model k equals ``fit`` from its own initial state with model 0's
    ``rng`` swapped in (``state._replace(rng=...)``: ``rng`` drives the
    shuffle; dropout masks stay each model's own).

    Args:
      keys: ``[K]`` array of ``jax.random`` keys (e.g. ``jax.random.split(key, K)``).
      lr_scales: optional ``[K]`` learning-rate factors (default all 1).
      l2s: optional ``[K]`` L2 strengths ``>= 0`` added to the network's ``l2`` (default none).
      dropouts: optional ``[K]`` dropout rates in ``[0, 1)`` replacing every dropout
        layer's own (default none: the network's rates).
      shared_order: all models use model 0's batch order (see above).
      other arguments: as for ``fit`` (no early stopping or resume).

    Returns:
      ``(states, history)``: a ``TrainState`` whose leaves have a leading ``[K]``
      axis, and ``{"train_loss": [epochs, K], "val_loss": [epochs, K],
      "val_accuracy": [epochs, K]}`` NumPy arrays.
    """
    epochs = _checks.positive_int("epochs", epochs)
    x, y = _prepare(net, data, dtype, "data")
    batch_size = _data.check_batch_size(batch_size, x.shape[0])
    keys = jnp.asarray(keys)
    K = keys.shape[0]
    scales = jnp.ones((K,), dtype) if lr_scales is None else jnp.asarray(lr_scales, dtype)
    if scales.shape != (K,):
        raise InvalidArgument(f"lr_scales must have shape ({K},) like keys; got {scales.shape}.")
    if l2s is not None:
        l2s = np.asarray(l2s, np.float64)
        if l2s.shape != (K,) or not np.all(np.isfinite(l2s) & (l2s >= 0)):
            raise InvalidArgument(f"l2s must be {K} finite numbers >= 0, like keys; got {l2s.tolist()}.")
        l2s = jnp.asarray(l2s, dtype)
    keeps = None if dropouts is None else _dropout_keeps(net, dropouts, K)
    states = jax.vmap(lambda k: init_state(net, opt, key=k, dtype=dtype))(keys)
    run = _many_epoch(net, opt, grad, batch_size, drop_last, bool(shared_order))
    evaluate_many = jax.vmap(_eval_fn(net), in_axes=(0, None, None)) if validation is not None else None
    if validation is not None:
        xv, yv = _prepare(net, validation, dtype, "validation")
        if l2s is not None:  # each model's validation loss with its own penalty, as its network's loss has
            penalty = jax.jit(jax.vmap(lambda p, l2: _losses.l2_penalty(p, l2, xv.shape[0])))
    sizes = _step_sizes(x.shape[0], batch_size, drop_last)
    hist: dict[str, list] = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    for _ in range(epochs):
        states, losses = run(states, x, y, scales, l2s, keeps)  # losses: [K, steps]
        hist["train_loss"].append(np.asarray(losses) @ sizes / sizes.sum())
        if evaluate_many is not None:
            vl, va = jax.device_get(evaluate_many(states.params, xv, yv))
            if l2s is not None:
                vl = vl + np.asarray(penalty(states.params, l2s))
            hist["val_loss"].append(vl)
            hist["val_accuracy"].append(va)
    return states, {k: np.asarray(v) for k, v in hist.items()}
