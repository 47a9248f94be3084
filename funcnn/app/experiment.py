"""Runs what a ``Config`` describes: data, splits, preprocessing, training, evaluation.

The CLI and the scripts call this module; it prints nothing and touches no
files. One seed drives everything: ``jax.random.key(training.seed)`` is split
once into the data key (generated sets, splits) and the training key (init,
shuffles, dropout), so re-running a config re-creates the same splits, which is
what ``funcnn resume`` and ``funcnn evaluate`` rely on.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks, activations, data, metrics, optim, train
from funcnn.app.config import FULL_BATCH, Config, build_model, build_optimizer
from funcnn.errors import InvalidArgument
from funcnn.typing import Array

_GENERATED: dict[str, Callable[..., tuple[Array, Array]]] = {
    "two_lines": data.make_two_lines,
    "xor": data.make_xor,
    "sine": data.make_sine,
    "moons": data.make_moons,
    "spirals": data.make_spirals,
}
_IMAGE_SHAPES = {"digits": (8, 8), "mnist": (28, 28)}
# The data sets read from the user's files (data.path); the others are generated or bundled.
# A path stored inside a checkpoint is never read unless the user asks for it.
FILE_DATASETS = ("mnist", "csv")


class Split(NamedTuple):
    """Train/validation/test arrays after preprocessing (validation may be None)."""

    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array | None
    y_val: jax.Array | None
    x_test: jax.Array
    y_test: jax.Array
    standardizer: data.Standardizer | None  # fitted on the training split, or None
    classes: list | None = None  # csv string labels: label i is classes[i] (sorted); None otherwise


class RunResult(NamedTuple):
    """What ``run`` returns."""

    state: train.TrainState
    history: train.History | None  # None for a run resumed after its last epoch (nothing trained)
    test: dict  # evaluate_split's report on the test split
    seconds: float  # wall time of training (compilation included)


def keys(cfg: Config) -> tuple[jax.Array, jax.Array]:
    """(data key, training key) from the config's one seed."""
    return _keys(cfg.training.seed)[:2]


@functools.lru_cache(maxsize=16)
def _keys(seed: int):
    """(data key, training key, generation key, split key): drawn eagerly, each split would compile its own program."""
    return _draw_keys(seed)


@functools.partial(jax.jit, static_argnums=0)
def _draw_keys(seed: int):
    k_data, k_train = jax.random.split(jax.random.key(seed))
    k_gen, k_split = jax.random.split(k_data)
    return k_data, k_train, k_gen, k_split


def dtype_of(cfg: Config):
    return jnp.float64 if cfg.training.dtype == "float64" else jnp.float32


def load_split(cfg: Config) -> Split:
    """Loads or generates the data set, splits it and preprocesses it as configured."""
    d, dtype = cfg.data, dtype_of(cfg)
    k_gen, k_split = _keys(cfg.training.seed)[2:]
    stratify = d.stratify
    classes = None
    x_val: Array | None
    y_val: Array | None
    if d.name == "mnist":
        x_tr, y_tr, x_te, y_te = data.load_mnist(d.path, dtype=dtype)
        if d.val_size:
            x_tr, x_val, y_tr, y_val = data.train_test_split(x_tr, y_tr, test_size=d.val_size, key=k_split,
                                                             stratify=stratify)
        else:
            x_val = y_val = None
    else:
        if d.name == "digits":
            x, y = data.load_digits(dtype=dtype)
        elif d.name == "csv":
            x, y, classes = data.load_csv(d.path, target=d.target, dtype=dtype, return_classes=True)
            y = _csv_targets(cfg, y, dtype)
            stratify = stratify and jnp.issubdtype(y.dtype, jnp.integer)
        else:
            kwargs = {} if d.noise is None else {"noise": d.noise}
            x, y = _GENERATED[d.name](d.n_samples, key=k_gen, dtype=dtype, **kwargs)
            stratify = stratify and jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 1
        if d.val_size:
            x_tr, x_val, x_te, y_tr, y_val, y_te = data.train_val_test_split(
                x, y, val_size=d.val_size, test_size=d.test_size, key=k_split, stratify=stratify)
        else:
            x_tr, x_te, y_tr, y_te = data.train_test_split(x, y, test_size=d.test_size, key=k_split,
                                                           stratify=stratify)
            x_val = y_val = None
    if d.augment:
        x_tr, y_tr = data.augment_shifts(x_tr, y_tr, image_shape=_IMAGE_SHAPES[d.name])
    stats = None
    if d.standardize:
        stats = data.standardize_fit(x_tr)
        x_tr, x_te = data.standardize_apply(stats, x_tr), data.standardize_apply(stats, x_te)
        x_val = None if x_val is None else data.standardize_apply(stats, x_val)
    return Split(x_tr, y_tr, x_val, y_val, x_te, y_te, stats, classes)


def _csv_targets(cfg: Config, y, dtype):
    """A CSV target as the configured output needs it: regression rows ``[n, k]`` float, else as read.

    What counts as regression is the output activation's own ``decide``
    (None: the outputs are the prediction), so integer-valued targets of a
    regression (counts, years) are numbers, not class labels.
    """
    if activations.output(cfg.model.output).decide is not None:
        return y
    return y.astype(dtype).reshape(y.shape[0], -1)  # [n] -> [n, 1]; [n, k] stays


def total_steps(cfg: Config, n_train: int) -> int:
    """Optimizer steps of the whole run (what schedules span)."""
    t = cfg.training
    bs = t.batch_size or n_train
    return t.epochs * train.steps_per_epoch(n_train, bs, t.drop_last)


def build(cfg: Config, n_train: int):
    """(net, opt) for a config; opt is None for lbfgs and hessian_free (full-batch, no GradientTransformation)."""
    net = build_model(cfg.model)
    opt = None if cfg.optimizer.name in FULL_BATCH else build_optimizer(cfg.optimizer, total_steps(cfg, n_train))
    return net, opt


def initial_state(cfg: Config, net, opt) -> train.TrainState:
    """The state training starts from (what the gradient check is taken on)."""
    _, k_train = keys(cfg)
    return train.init_state(net, opt if opt is not None else optim.sgd(0.0), key=k_train, dtype=dtype_of(cfg))


def targets(net, y):
    """Integer class labels as the loss needs them: kept if it takes labels, one-hot otherwise.

    One-hot rows make ``binary_cross_entropy`` the classic one-vs-all logistic
    cost and ``mse`` the squared error to the indicator vector. The rows get
    the dtype of the network's parameters (``float32`` unless the run is
    ``float64``).
    """
    if jnp.issubdtype(y.dtype, jnp.integer) and not net.criterion.labels:
        dtype = jax.eval_shape(net.init, jax.random.key(0))[0]
        dtype = jax.tree.leaves(dtype)[0].dtype
        return data.one_hot(y, net.output_size, dtype=dtype)
    return y


def evaluate_split(net, params, x, y) -> dict:
    """Loss plus accuracy/confusion/precision/recall/F1 (classifiers) or MSE/RMSE/R^2 (regression).

    Returns:
      A JSON-able dict of Python floats and lists.

    Raises:
      ValueError (a funcnn error): integer labels outside ``[0, net.output_size)``
        (they would give a NaN loss and vanish from the confusion matrix).
    """
    if jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):
        _checks.labels_in_range("y", y, net.output_size)
    report = jax.device_get(_evaluator(net)(params, x, y))
    return {k: np.asarray(v).tolist() for k, v in report.items()}


@functools.lru_cache(maxsize=64)
def _evaluator(net):
    """One compiled evaluation per network (op-by-op eager evaluation costs more to compile)."""
    m, out = net.output_size, net.output

    @jax.jit
    def evaluate(params, x, y):
        report = {"loss": net.loss(params, x, targets(net, y))}
        yout = net.apply(params, x)
        if jnp.issubdtype(y.dtype, jnp.integer):  # class labels: the predicted class is the argmax
            truth, pred, classes = y, jnp.argmax(yout, axis=-1), m
        elif out.decide is None:  # regression
            return dict(report, mse=metrics.mse(y, yout), rmse=metrics.rmse(y, yout),
                        r2=metrics.r2_score(y, yout))
        elif m == 1:  # one sigmoid output: binary classes
            truth, pred, classes = out.decide(y)[:, 0], out.decide(yout)[:, 0], 2
        elif out.decide(y).ndim == 1:  # one decision per sample (softmax): one-hot or soft target rows
            truth, pred, classes = out.decide(y), out.decide(yout), m
        else:  # several decisions per sample (multi-label): exact-match accuracy, as everywhere
            return dict(report, accuracy=activations.accuracy(out, yout, y))
        return dict(report, **metrics.classification_report(truth, pred, classes))

    return evaluate


def run(cfg: Config, split: Split | None = None, *, state: train.TrainState | None = None,
        epochs: int | None = None, callback: Callable[[int, dict, train.TrainState], Any] | None = None,
        mesh=None, first_epoch: int = 0, best: train.BestSoFar | None = None) -> RunResult:
    """Trains as ``cfg`` says and evaluates on the test split.

    Args:
      cfg: a validated ``Config``.
      split: the data (default ``load_split(cfg)``).
      state: continue from this state (resume) instead of a fresh one.
      epochs: epochs to run (default ``cfg.training.epochs``; resume passes the rest).
      callback: passed to ``train.fit``; called after every epoch.
      first_epoch, best: passed to ``train.fit`` (resume: the epochs done and
        the run's best-so-far, so early stopping and the best epoch carry over).
      mesh: passed to ``train.fit``: data-parallel training over its devices
        (``funcnn.parallel.data_mesh``); every process of a multi-process run
        calls ``run`` with the same config and loads the same split.

    Raises:
      ValueError: a mesh with L-BFGS (one full-batch minimisation, not data-parallel).
    """
    split = load_split(cfg) if split is None else split
    t = cfg.training
    net, opt = build(cfg, split.x_train.shape[0])
    start = time.perf_counter()
    if opt is None:
        if mesh is not None:
            raise InvalidArgument(f"optimizer.name={cfg.optimizer.name!r} is one full-batch minimisation and does "
                                  "not run data-parallel; train it without a mesh (no --distributed).")
        run_full = _run_lbfgs if cfg.optimizer.name == "lbfgs" else _run_hessian_free
        state, history = run_full(cfg, net, split, callback)
    else:
        validation = None if split.x_val is None else (split.x_val, split.y_val)
        validation = None if validation is None else (validation[0], targets(net, validation[1]))
        state, history = train.fit(
            net, opt, (split.x_train, targets(net, split.y_train)), epochs=epochs or t.epochs,
            batch_size=t.batch_size or split.x_train.shape[0],
            state=initial_state(cfg, net, opt) if state is None else state, validation=validation, grad=t.grad,
            drop_last=t.drop_last,
            early_stopping=t.early_stopping, callback=callback, dtype=dtype_of(cfg), mesh=mesh,
            first_epoch=first_epoch, best=best)
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - start
    return RunResult(state, history, evaluate_split(net, state.params, split.x_test, split.y_test), seconds)


def _run_lbfgs(cfg, net, split, callback):
    """Full-batch L-BFGS on the training split: one compiled minimisation."""
    t, o = cfg.training, cfg.optimizer
    state = initial_state(cfg, net, None)
    x, y = split.x_train, targets(net, split.y_train)
    vg = net.value_and_grad if t.grad == "manual" else jax.value_and_grad(net.loss)
    first = float(net.loss(state.params, x, y))
    res = jax.jit(lambda p: optim.lbfgs_minimize(lambda q: vg(q, x, y), p, max_iters=o.max_iters,
                                                 history=o.history))(state.params)
    return _full_batch_result(net, split, callback, state, res, first, {})


def _run_hessian_free(cfg, net, split, callback):
    """Full-batch Hessian-free on the training split (net.gnvp products): one compiled minimisation."""
    t, o = cfg.training, cfg.optimizer
    state = initial_state(cfg, net, None)
    x, y = split.x_train, targets(net, split.y_train)
    vg = net.value_and_grad if t.grad == "manual" else jax.value_and_grad(net.loss)
    first = float(net.loss(state.params, x, y))
    res = jax.jit(lambda p: optim.hessian_free(lambda q: vg(q, x, y), lambda q, v: net.gnvp(q, x, y, v), p,
                                               max_iters=o.max_iters, max_cg_iters=o.cg_iters,
                                               damping=o.damping))(state.params)
    return _full_batch_result(net, split, callback, state, res, first, {"gnvps": int(res.num_gnvps)})


def _full_batch_result(net, split, callback, state, res, first, extra):
    state = state._replace(params=res.params, step=jnp.asarray(res.iterations, jnp.int32))
    iterations = int(res.iterations)
    # One full-batch minimisation is one "epoch"; its loss curve is per iteration (what history.png draws).
    trace = np.asarray(res.losses[:iterations + 1], np.float64).tolist()
    metrics_ = {"epoch": 0, "train_loss": float(res.value), "initial_loss": first,
                "iterations": iterations, "evaluations": int(res.num_evals), **extra, "iteration_losses": trace}
    if split.x_val is not None:
        metrics_["val_loss"] = float(net.loss(res.params, split.x_val, targets(net, split.y_val)))
    history = train.History([float(res.value)], [metrics_["val_loss"]] if "val_loss" in metrics_ else [], [],
                            None, False)
    if callback is not None:
        callback(0, metrics_, state)
    return state, history
