"""scikit-learn estimators over funcnn: ``MLPClassifier`` and ``MLPRegressor``.

Needs the optional extra ``sklearn`` (``pip install funcnn[sklearn]``); the
rest of funcnn never imports scikit-learn.

They are scikit-learn estimators (``BaseEstimator`` and the usual mixins):
``fit``/``partial_fit``/``predict``/``score``, ``get_params``/``set_params``,
``clone``, ``Pipeline``, ``GridSearchCV``, ``cross_val_score``. They pass
scikit-learn's own ``check_estimator`` suite with the expectations published
in ``EXPECTED_FAILED_CHECKS``::

    from sklearn.utils.estimator_checks import check_estimator
    check_estimator(MLPClassifier(), expected_failed_checks=EXPECTED_FAILED_CHECKS["MLPClassifier"])

Parameters named as scikit-learn's ``MLPClassifier`` names them mean the same:
``hidden_layer_sizes``, ``activation``, ``alpha``, ``batch_size``,
``learning_rate_init``, ``max_iter`` (epochs), ``tol``, ``early_stopping``,
``validation_fraction``, ``n_iter_no_change``, ``random_state``,
``warm_start``, ``verbose`` (prints one line per epoch, as scikit-learn's does:
the one place funcnn prints, and only when asked), except that
``batch_size="auto"`` is ``min(200, n)`` but at most a quarter of the padded
row count (see Speed): 3 or 4 steps per epoch at least.

Defaults: scikit-learn's (100 relu units, Adam at 1e-3, ``alpha=1e-4``,
200 epochs, stopping after 10 epochs without a ``tol`` improvement) plus
``standardize=True`` and ``batch_size="auto"``'s quarter-of-the-rows cap. They
were chosen on digits, iris and wine (5-fold stratified cross-validation
against scikit-learn's ``MLPClassifier`` defaults). Of the alternatives
tried, learning rates 2e-3 and 3e-3, 100, 150 and 300 epochs, ``alpha`` 0.1
and 1, and 128 units lost a sample or more on iris; batch size 32 and
``alpha`` 1e-3 or 1e-2 tied on iris and wine and gained less than the folds'
spread on digits, so scikit-learn's values stayed. Breast cancer was held out
and run only once they were fixed. ``scripts/vs_sklearn.py`` gives the table
(README, "scikit-learn estimators").
``alpha`` is funcnn's ``l2``: both penalise
``alpha / (2 n) * sum W^2`` with ``n`` the minibatch size, scikit-learn's
convention too, so equal ``alpha`` is equal regularisation. (For several
regression outputs funcnn's ``mse`` sums over outputs where scikit-learn's
averages: the data term is ``k`` times larger, so ``alpha`` weighs ``k`` times
less.) funcnn's own: ``grad`` (``"manual"`` hand-derived backprop or
``"autodiff"``), ``optimizer`` (a name or a ``funcnn.optim`` value),
``dropout``, ``schedule`` (a ``step -> lr`` function from
``funcnn.schedules`` replacing the constant ``learning_rate_init``) and
``standardize`` (scale the inputs to zero mean and unit variance inside the
estimator; on by default, as a neural network wants it).

Speed: training runs ``funcnn.train.make_padded_epoch``, ``funcnn.train.fit``'s
compiled epoch (same order, same batches, same result up to float rounding)
over training rows padded to a bucket of sizes (eighths of a power of 4; the
padding weighs nothing and its steps are skipped), with the row count a traced
number. Every compiled function is cached on the network, the optimizer and
the shapes, so a second ``fit`` with the same shapes compiles nothing, and
neither does a fit on another number of rows of the same bucket:
cross-validation folds one row apart and a grid search's refits share one
program. ``alpha``, ``learning_rate_init`` (with a named optimizer and no
schedule) and a ``dropout`` rate in (0, 1) are traced scalars of that
program, not constants (``make_padded_epoch``'s ``l2``, ``lr_scale`` and
``keep``): a grid search over them compiles one epoch, not one per
combination (switching dropout between 0 and a rate is the one change that
compiles another).
Prediction runs in fixed-size row chunks (padded), so it compiles once per
model shape whatever the number of rows, and each row's prediction does not
depend on the other rows.

``n_jobs``: use ``n_jobs=1`` (the default) in ``cross_val_score`` and
``GridSearchCV``; JAX already uses every core for one fit, and forked worker
processes cannot safely inherit JAX's threads (``n_jobs>1`` works with
joblib's default process backend, loky, which starts fresh processes, at the
price of importing and compiling in each).

Saving: a fitted estimator pickles (it holds NumPy arrays and its parameters
only; that is the scikit-learn convention for the user's own object), and
``est.save(path)`` / ``MLPClassifier.load(path)`` write and read a funcnn
checkpoint (``funcnn.checkpoint``: no pickle), the classes and the
standardisation stored in its ``extra``.
"""
from __future__ import annotations

import functools
import math
import numbers
import warnings

import jax
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from funcnn import checkpoint, layers, optim, shuffle, train
from funcnn.mlp import mlp as _mlp_net

__all__ = ["MLPClassifier", "MLPRegressor", "EXPECTED_FAILED_CHECKS", "OPTIMIZERS"]

# scikit-learn's checks that cannot apply, with the reason; pass it as
# check_estimator(est, expected_failed_checks=EXPECTED_FAILED_CHECKS[type(est).__name__]).
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"MLPClassifier": {}, "MLPRegressor": {}}

# optimizer names -> funcnn.optim factories of the learning rate (a float or a schedule)
OPTIMIZERS = {"adam": optim.adam, "adamw": optim.adamw, "sgd": optim.sgd, "momentum": optim.momentum,
              "nesterov": optim.nesterov, "rmsprop": optim.rmsprop, "adagrad": optim.adagrad}
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")  # scikit-learn's names; funcnn's own are accepted too
_SKLEARN_NAMES = {"logistic": "sigmoid"}  # scikit-learn's name -> funcnn's
PREDICT_CHUNK = 1024  # rows per compiled prediction call (padded): one compilation for any n


@functools.lru_cache(maxsize=128)
def _forward(net):
    """``(params, x [PREDICT_CHUNK, d]) -> (outputs, decisions or outputs)``, jitted once per network."""
    def run(params, x):
        y = net.apply(params, x)
        return y, (y if net.output.decide is None else net.output.decide(y))
    return jax.jit(run)


def _padded_rows(n: int) -> int:
    """The row count a fit of ``n`` rows is padded to: one compiled epoch serves every ``n`` of a bucket.

    Buckets are eighths of ``n``'s shuffle domain (``shuffle.domain_size``), and a
    bucket never leaves that domain, so the padded epoch visits the rows in
    ``train.make_epoch``'s own order (``shuffle.padded_permutation``); the
    padding is under an eighth of the domain (under ``n / 2``, and its steps
    are skipped, so it costs memory, not time).
    """
    domain = shuffle.domain_size(n)
    q = max(1, domain // 8)
    return min(domain, -(-n // q) * q)


def _pad(a: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows, *a.shape[1:]), a.dtype)
    out[:a.shape[0]] = a
    return out


def _predict_chunks(net, params, x):
    """``(outputs, decisions)`` of ``x`` ``[n, d]`` in padded ``PREDICT_CHUNK``-row calls (one compilation)."""
    run = _forward(net)
    outs, decs = [], []
    for i in range(0, x.shape[0], PREDICT_CHUNK):
        part = x[i:i + PREDICT_CHUNK]
        out, dec = jax.device_get(run(params, jax.device_put(_pad(part, PREDICT_CHUNK))))
        outs.append(out[:part.shape[0]]), decs.append(dec[:part.shape[0]])
    return np.concatenate(outs).astype(np.float64), np.concatenate(decs)


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share; see the module docstring."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, alpha=1e-4, batch_size="auto",
                 learning_rate_init=1e-3, max_iter=200, tol=1e-4, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, random_state=None, warm_start=False,
                 verbose=False, grad="manual", optimizer="adam", dropout=0.0, schedule=None,
                 standardize=True):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.grad = grad
        self.optimizer = optimizer
        self.dropout = dropout
        self.schedule = schedule
        self.standardize = standardize

    # -- what the subclasses say
    _output: str | None = None  # the output activation's name; the classifier sets it per y
    _loss: str | None = None  # the loss's name, likewise
    _y_numeric = False  # validate_data: y must be numbers (regression)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.target_tags.multi_output = True
        return tags

    # -- building pieces from the hyperparameters (values are cached: same args, same objects)
    def _check_params(self):
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        if not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and h > 0 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive ints; got {self.hidden_layer_sizes!r}.")
        for name, low in (("max_iter", 1), ("n_iter_no_change", 1)):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an int >= {low}; got {v!r}.")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}.")
        if not (isinstance(self.learning_rate_init, numbers.Real) and self.learning_rate_init > 0):
            raise ValueError(f"learning_rate_init must be a number > 0; got {self.learning_rate_init!r}.")
        a = self.alpha  # not in the network the epoch runs (_compiled): checked here
        if not (isinstance(a, numbers.Real) and not isinstance(a, bool) and math.isfinite(a) and a >= 0):
            raise ValueError(f"alpha must be a finite number >= 0; got {a!r}.")
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol must be a number >= 0; got {self.tol!r}.")
        return tuple(int(h) for h in sizes)

    def _network(self, d: int, m: int, *, l2=None, dropout=None):
        """The model as set (its spec is what ``save`` writes), or with ``l2`` / ``dropout`` given instead."""
        act = self.activation
        act = _SKLEARN_NAMES.get(act, act) if isinstance(act, str) else act
        return _mlp_net([d, *self._check_params(), m], hidden=act, output=self._output, loss=self._loss,
                        l2=float(self.alpha) if l2 is None else l2,
                        dropout=self.dropout if dropout is None else dropout)

    def _compiled(self, d: int, m: int):
        """``(net, opt, hyper)``: what the compiled epoch runs, and the scalars each fit passes it.

        ``alpha``, one ``dropout`` rate and ``learning_rate_init`` are not constants
        of the program but traced scalars (``train.make_padded_epoch``'s ``l2``,
        ``keep`` and ``lr_scale``): the network is built with ``l2=0`` (and, with
        dropout, a stand-in rate) and a named optimizer with learning rate 1, so
        every fit of a grid search over them runs ONE compiled epoch. The network
        also predicts: without a key its dropout does nothing and L2 is not in
        the outputs.
        """
        named = self.schedule is None and not isinstance(self.optimizer, optim.GradientTransformation)
        opt = self._opt(1.0) if named else self._opt()
        hyper = {"lr_scale": np.float32(self.learning_rate_init) if named else None,
                 "l2": np.float32(self.alpha) if float(self.alpha) else None,
                 "keep": layers.keep_of(self.dropout) if self._per_fit_rate() else None}
        return self._compiled_net(d, m), opt, hyper

    def _per_fit_rate(self) -> bool:
        """One dropout rate in (0, 1): a traced scalar of the compiled epoch (``_compiled``)."""
        r = self.dropout
        return isinstance(r, numbers.Real) and not isinstance(r, bool) and 0 < float(r) < 1

    def _compiled_net(self, d: int, m: int):
        """The network of ``_compiled``, which also predicts (no hyperparameter to pass there)."""
        return self._network(d, m, l2=0.0, dropout=layers.STAND_IN_RATE if self._per_fit_rate() else None)

    def _opt(self, lr=None):
        """The optimizer as set; ``lr``: a named one with that learning rate instead (``_compiled``)."""
        if lr is None:
            lr = self.learning_rate_init if self.schedule is None else self.schedule
        if isinstance(self.optimizer, optim.GradientTransformation):
            return self.optimizer  # used as given: its own learning rate
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)} or a funcnn.optim "
                             f"GradientTransformation; got {self.optimizer!r}.")
        return OPTIMIZERS[self.optimizer](lr)

    def _batch(self, n: int) -> int:
        if self.batch_size == "auto":
            # scikit-learn's min(200, n), but at most a quarter of the rows: on small sets (iris: 120
            # rows) one full-batch step per epoch leaves max_iter=200 epochs far from converged.
            # A quarter of the padded row count N (< 1.5 n), so every n of one bucket shares one
            # compiled epoch: 3 or 4 steps per epoch at least.
            return min(200, n, max(1, math.ceil(_padded_rows(n) / 4)))
        b = self.batch_size
        if not isinstance(b, numbers.Integral) or isinstance(b, bool) or b < 1:
            raise ValueError(f"batch_size must be 'auto' or an int >= 1; got {b!r}.")
        return min(int(b), n)  # as scikit-learn: a batch larger than the data is the whole data

    # -- data
    def _x(self, X, *, reset: bool):
        X = validate_data(self, X, reset=reset, dtype=(np.float64, np.float32))
        if reset:
            mean, scale = X.mean(0), X.std(0)
            scale[scale == 0] = 1.0  # a constant column stays constant (0), never NaN
            self._scaler = (mean, scale) if self.standardize else None
        if self._scaler is not None:
            X = (X - self._scaler[0]) / self._scaler[1]
        return np.asarray(X, np.float32)

    def _xy(self, X, y, *, reset: bool):
        X, y = validate_data(self, X, y, reset=reset, multi_output=True, dtype=(np.float64, np.float32),
                             y_numeric=self._y_numeric)
        if reset:
            mean, scale = X.mean(0), X.std(0)
            scale[scale == 0] = 1.0
            self._scaler = (mean, scale) if self.standardize else None
        if self._scaler is not None:
            X = (X - self._scaler[0]) / self._scaler[1]
        return np.asarray(X, np.float32), y

    # -- training
    def _state_for(self, net, opt, key):
        return train.init_state(net, opt, key=key)

    def _epoch(self, net, opt, hyper, state, x, y, n: int):
        """One epoch over the first ``n`` rows of the padded ``x``, ``y``: ``(state, mean loss)``."""
        B = self._batch(n)
        run = train.make_padded_epoch(net, opt, batch_size=B, grad=self.grad)
        state, losses = run(state, x, y, np.int32(n), **hyper)
        sizes = train.padded_step_sizes(n, x.shape[0], B)
        return state, float(np.asarray(losses) @ sizes / n)  # np.asarray: the one host sync per epoch

    def _start(self, net, opt, x):
        """A fresh TrainState, or the fitted one (warm start / partial_fit) if its shapes fit."""
        old = getattr(self, "_state", None)
        if old is not None and getattr(self, "_net_spec", None) == net.spec:
            return jax.device_put(old)._replace(rng=jax.random.wrap_key_data(old.rng))
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        self.loss_curve_, self.validation_scores_, self.n_iter_ = [], [], 0
        self.best_loss_, self.best_validation_score_ = np.inf, -np.inf
        self._no_improvement = 0
        return self._state_for(net, opt, jax.random.key(seed))

    def _keep(self, net, state):
        s = _host(state._replace(rng=jax.random.key_data(state.rng)))
        self._state, self._net_spec = s, net.spec
        self._params = s.params

    def _fit(self, x, y, *, epochs: int, incremental: bool):
        net, opt, hyper = self._compiled(x.shape[1], self._width)
        if not (incremental or self.warm_start):
            self._state = None
        xv = yv = None
        if self.early_stopping and not incremental:
            strat = self._stratify(y)
            x, xv, y, yv = train_test_split(x, y, test_size=self.validation_fraction,
                                            random_state=check_random_state(self.random_state).randint(2**31),
                                            stratify=strat)
        state = self._start(net, opt, x)
        # padded to the bucket's row count (one compiled epoch for every fold size), on device once
        n = x.shape[0]
        yt, x = (jax.device_put(_pad(a, _padded_rows(n))) for a in (self._encode(y), x))
        best_params = None
        for _ in range(epochs):
            state, loss = self._epoch(net, opt, hyper, state, x, yt, n)
            if not np.isfinite(loss):
                raise ValueError(f"training diverged: the loss became {loss} at epoch {self.n_iter_}; "
                                 "lower learning_rate_init.")
            self.n_iter_ += 1
            self.loss_curve_.append(loss)
            if self.verbose:  # asked for explicitly, as scikit-learn's verbose prints
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if incremental:
                continue
            if xv is not None:
                self._params = _host(state.params)
                score = self._score_encoded(xv, yv)
                self.validation_scores_.append(score)
                improved = score > self.best_validation_score_ + self.tol
                if score > self.best_validation_score_:
                    self.best_validation_score_, best_params = score, state.params
            else:
                improved = loss < self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, loss)
            self._no_improvement = 0 if improved else self._no_improvement + 1
            if self._no_improvement >= self.n_iter_no_change:
                break
        else:
            if not incremental and epochs > 1:
                warnings.warn(f"Stochastic optimizer: maximum iterations ({epochs}) reached and the "
                              "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=3)
        if best_params is not None:
            state = state._replace(params=best_params)
        self._keep(net, state)
        self._no_improvement = 0
        return self

    # -- prediction
    def _outputs(self, X):
        check_is_fitted(self, "_params")
        x = self._x(X, reset=False)
        return _predict_chunks(self._compiled_net(x.shape[1], self._width), self._params, x)

    # -- funcnn's safe checkpoint
    def save(self, path, *, overwrite: bool = False):
        """Writes the fitted model to a funcnn checkpoint (no pickle); ``load`` reads it back.

        Raises:
          sklearn.exceptions.NotFittedError: not fitted.
          FileExistsError: ``path`` exists and ``overwrite`` is False.
        """
        check_is_fitted(self, "_params")
        state = jax.device_put(self._state)._replace(rng=jax.random.wrap_key_data(self._state.rng))
        extra = {"estimator": type(self).__name__, "params": _jsonable_params(self.get_params()),
                 "scaler": None if self._scaler is None else [a.tolist() for a in self._scaler],
                 "n_features_in": int(self.n_features_in_), "n_iter": int(self.n_iter_),
                 "loss_curve": [float(v) for v in self.loss_curve_], **self._extra()}
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in"] = [str(f) for f in self.feature_names_in_]
        net = self._network(int(self.n_features_in_), self._width)
        return checkpoint.save(path, state, spec=net, extra=extra, overwrite=overwrite)

    @classmethod
    def load(cls, path):
        """An estimator fitted as the one ``save`` wrote to ``path``.

        Raises:
          funcnn.checkpoint.CheckpointError: a bad file, or one written by another estimator class.
        """
        ck = checkpoint.load(path)
        ex = ck.extra
        if ex.get("estimator") != cls.__name__:
            raise checkpoint.CheckpointError(f"{path}: holds a {ex.get('estimator')!r} estimator, "
                                             f"not a {cls.__name__}; load it with that class.")
        est = cls(**{k: tuple(v) if k == "hidden_layer_sizes" else v for k, v in ex["params"].items()})
        est.n_features_in_ = ex["n_features_in"]
        if "feature_names_in" in ex:
            est.feature_names_in_ = np.asarray(ex["feature_names_in"], dtype=object)
        est._scaler = None if ex["scaler"] is None else tuple(np.asarray(a) for a in ex["scaler"])
        est.n_iter_, est.loss_curve_, est.validation_scores_ = ex["n_iter"], ex["loss_curve"], []
        est._load_extra(ex)
        est._keep(est._compiled_net(est.n_features_in_, est._width), checkpoint.restore_state(ck, est._opt()))
        return est


def _jsonable_params(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if k == "hidden_layer_sizes":
            v = [int(h) for h in ((v,) if isinstance(v, numbers.Integral) else v)]
        elif callable(v) or isinstance(v, optim.GradientTransformation):
            raise TypeError(f"save() stores hyperparameters by value in JSON; {k}={v!r} is a function. "
                            "Pickle the estimator instead, or use a named optimizer and no schedule.")
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A funcnn MLP classifier with scikit-learn's interface.

    Labels can be any sortable hashable values (ints, strings, ...);
    ``classes_`` holds them sorted. A 2-D 0/1 indicator ``y`` is multi-label:
    sigmoid outputs with binary cross-entropy, one per column. Otherwise
    softmax with cross-entropy. See the module docstring for the parameters.

    Attributes (after fit): ``classes_``, ``loss_curve_``,
    ``validation_scores_`` (with early stopping), ``best_validation_score_``,
    ``n_iter_``, ``n_features_in_``, ``feature_names_in_`` (for a DataFrame),
    ``n_outputs_``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    @property
    def _width(self):
        return len(self.classes_)

    def _set_classes(self, y, classes=None):
        self._multilabel = type_of_target(y) == "multilabel-indicator"
        if self._multilabel:
            self.classes_ = np.arange(y.shape[1])
            self._indicator_dtype = np.asarray(y).dtype  # predict answers in the targets' dtype
            self._output, self._loss = "sigmoid", "binary_cross_entropy"
        else:
            check_classification_targets(y)
            self.classes_ = unique_labels(y) if classes is None else unique_labels(classes)
            if len(self.classes_) < 2:
                raise ValueError(f"MLPClassifier needs samples of at least 2 classes in y; got one class "
                                 f"{self.classes_.tolist()}.")
            self._output, self._loss = "softmax", "cross_entropy"
        self.n_outputs_ = len(self.classes_) if self._multilabel else 1

    def _stratify(self, y):
        return None if self._multilabel else y

    def _encode(self, y):
        if self._multilabel:
            return jax.device_put(np.asarray(y, np.float32))
        y = np.ravel(y)
        idx = np.searchsorted(self.classes_, y)
        if np.any(idx >= len(self.classes_)) or np.any(self.classes_[np.minimum(idx, len(self.classes_) - 1)] != y):
            unseen = sorted(set(np.asarray(y).tolist()) - set(self.classes_.tolist()))
            raise ValueError(f"y holds labels {unseen} not in classes_ {self.classes_.tolist()}.")
        return jax.device_put(idx.astype(np.int32))

    def _score_encoded(self, x, y):
        return accuracy_score(y, self._decide(self._outputs_scaled(x)[1]))

    def _outputs_scaled(self, x):
        # validation rows are already standardised: predict without re-validating
        return _predict_chunks(self._compiled_net(x.shape[1], self._width), self._params, x)

    def _decide(self, dec):
        return dec.astype(self._indicator_dtype) if self._multilabel else self.classes_[dec]

    def fit(self, X, y):
        """Trains for up to ``max_iter`` epochs (fewer when the loss stops improving); returns self."""
        x, y = self._xy(X, y, reset=True)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; ravelling it.",
                          _data_conversion_warning(), stacklevel=2)
            y = y.ravel()
        self._set_classes(y)
        return self._fit(x, y, epochs=self.max_iter, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``(X, y)``. The first call needs ``classes`` (every label that will occur)."""
        first = not hasattr(self, "classes_") or not hasattr(self, "_state")
        if first and classes is None and type_of_target(y) != "multilabel-indicator":
            raise ValueError("classes must be passed on the first call to partial_fit (every label y "
                             "will hold, e.g. classes=np.unique(y_all)).")
        x, y = self._xy(X, y, reset=first)
        if first:
            self._set_classes(y, classes)
            self._state = None
        return self._fit(x, y, epochs=1, incremental=True)

    def predict(self, X):
        """Labels ``[n]`` from ``classes_`` (multi-label: a ``[n, k]`` 0/1 indicator)."""
        return self._decide(self._outputs(X)[1])

    def predict_proba(self, X):
        """``[n, n_classes]`` probabilities (float64; multi-label: each column's own)."""
        p = self._outputs(X)[0]
        return p if self._multilabel else p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def _extra(self):
        return {"classes": self.classes_.tolist(), "multilabel": bool(self._multilabel),
                **({"indicator_dtype": np.dtype(self._indicator_dtype).str} if self._multilabel else {})}

    def _load_extra(self, ex):
        self.classes_ = np.asarray(ex["classes"])
        self._multilabel = ex["multilabel"]
        self._indicator_dtype = np.dtype(ex.get("indicator_dtype", "int64"))
        self._output, self._loss = ("sigmoid", "binary_cross_entropy") if self._multilabel \
            else ("softmax", "cross_entropy")
        self.n_outputs_ = len(self.classes_) if self._multilabel else 1


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A funcnn MLP regressor with scikit-learn's interface: identity output, ``mse`` loss.

    ``y`` ``[n]`` gives predictions ``[n]``; ``y`` ``[n, k]`` gives ``[n, k]``.
    See the module docstring for the parameters.

    Attributes (after fit): ``loss_curve_``, ``validation_scores_`` (R^2, with
    early stopping), ``best_validation_score_``, ``n_iter_``,
    ``n_features_in_``, ``feature_names_in_`` (for a DataFrame), ``n_outputs_``.
    """

    _output, _loss = "identity", "mse"
    _y_numeric = True

    @property
    def _width(self):
        return self.n_outputs_

    def _stratify(self, y):
        return None

    def _encode(self, y):
        return jax.device_put(np.asarray(y, np.float32).reshape(y.shape[0], -1))

    def _score_encoded(self, x, y):
        out = _predict_chunks(self._compiled_net(x.shape[1], self._width), self._params, x)[0]
        return r2_score(y, out.reshape(np.shape(y)))

    def _set_outputs(self, y):
        self._y_1d = y.ndim == 1
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]

    def fit(self, X, y):
        """Trains for up to ``max_iter`` epochs (fewer when the loss stops improving); returns self."""
        x, y = self._xy(X, y, reset=True)
        self._set_outputs(y)
        return self._fit(x, y, epochs=self.max_iter, incremental=False)

    def partial_fit(self, X, y):
        """One epoch over ``(X, y)``; returns self."""
        first = not hasattr(self, "_state")
        x, y = self._xy(X, y, reset=first)
        if first:
            self._set_outputs(y)
            self._state = None
        return self._fit(x, y, epochs=1, incremental=True)

    def predict(self, X):
        """``[n]`` (1-D ``y`` in fit) or ``[n, k]`` predictions, float64."""
        out = self._outputs(X)[0]
        return out.ravel() if self._y_1d else out

    def _extra(self):
        return {"y_1d": bool(self._y_1d), "n_outputs": int(self.n_outputs_)}

    def _load_extra(self, ex):
        self._y_1d, self.n_outputs_ = ex["y_1d"], ex["n_outputs"]


def _data_conversion_warning():
    from sklearn.exceptions import DataConversionWarning
    return DataConversionWarning
