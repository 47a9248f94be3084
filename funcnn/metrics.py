"""Evaluation metrics: pure ``jnp`` functions, jittable, returning JAX arrays.

Classification metrics take integer (or bool, read as 0/1) labels ``[n]``. Either argument may also be
scores ``[n, C]`` (probabilities, logits or one-hot rows), which are reduced to
labels by ``argmax`` over the last axis (ties go to the lowest class). A single
score column ``[n, 1]`` is rejected: whether it holds a probability (threshold
0.5) or a logit (threshold 0) cannot be told, so threshold it yourself, e.g.
``(p[:, 0] > 0.5).astype(jnp.int32)``.

``num_classes`` fixes output shapes, so it must be a Python int (mark it static
under ``jit``, e.g. with ``functools.partial``). Labels outside
``[0, num_classes)`` raise eagerly; inside ``jit``, where values are unknown,
they are not counted in the confusion matrix.

Per-class ratios with a zero denominator (a class never predicted has no
precision; a class absent from ``y_true`` no recall) are defined as 0, as
scikit-learn's ``zero_division=0``. Macro averages are taken over the classes
that occur in ``y_true`` or ``y_pred``, as scikit-learn's ``average="macro"``
with its default ``labels``, so an unused class slot does not drag them down.

Regression metrics take ``[n]`` or ``[n, k]`` arrays of the same shape and
return a scalar in the inputs' float dtype (at least float32).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from funcnn import _checks
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.typing import Array

__all__ = [
    "accuracy", "confusion_matrix", "precision_recall_f1", "macro_f1",
    "classification_report", "mse", "rmse", "r2_score",
]


def _labels(name: str, y, num_classes: int | None) -> Array:
    """Integer labels ``[n]`` (int32) from labels ``[n]`` or scores ``[n, C]``."""
    y = jnp.asarray(y)
    if y.ndim == 2:
        if y.shape[1] == 1:
            raise InvalidArgument(
                f"{name} has one column (shape {y.shape}); the class cannot be read from a "
                f"single score. Threshold it first, e.g. ({name}[:, 0] > 0.5).astype(jnp.int32) "
                f"for probabilities.")
        if num_classes is not None and y.shape[1] != num_classes:
            raise InvalidArgument(f"{name} has {y.shape[1]} score columns (shape {y.shape}) but "
                             f"num_classes={num_classes}; they must agree.")
        return jnp.argmax(y, axis=1).astype(jnp.int32)
    if y.ndim != 1:
        raise InvalidArgument(f"{name} must be integer labels [n] or scores [n, C]; got shape "
                         f"{y.shape}.")
    # bool is accepted as 0/1, so `accuracy(y, p[:, 0] > 0.5)` works for sigmoid outputs.
    if not (jnp.issubdtype(y.dtype, jnp.integer) or y.dtype == jnp.bool_):
        raise InvalidType(f"{name} as labels [n] must have an integer dtype; got {y.dtype}. "
                        f"Pass y.astype(jnp.int32), or scores [n, C] to be argmax-ed.")
    if num_classes is not None:
        _checks.labels_in_range(name, y, num_classes)
    return y.astype(jnp.int32)


def _pair(y_true, y_pred, num_classes: int | None) -> tuple[Array, Array]:
    if num_classes is not None:
        num_classes = _checks.positive_int("num_classes", num_classes)
    t = _labels("y_true", y_true, num_classes)
    p = _labels("y_pred", y_pred, num_classes)
    if t.shape[0] != p.shape[0]:
        raise InvalidArgument(f"y_true and y_pred must have the same number of samples; got "
                         f"{t.shape[0]} and {p.shape[0]}.")
    if t.shape[0] == 0:
        raise InvalidArgument("y_true and y_pred are empty; metrics need at least one sample.")
    return t, p


def _ratio(num: Array, den: Array, dtype) -> Array:
    """num / den elementwise, 0 where den == 0 (zero_division=0), without a NaN."""
    safe = jnp.where(den > 0, den, 1).astype(dtype)
    return jnp.where(den > 0, num.astype(dtype) / safe, jnp.zeros((), dtype))


def accuracy(y_true, y_pred, *, dtype=jnp.float32) -> Array:
    """Fraction of samples whose predicted class equals the true class.

    Args:
      y_true: ``[n]`` integer labels (or ``[n, C]`` one-hot/scores, argmax-ed).
      y_pred: ``[n]`` integer labels or ``[n, C]`` scores (probabilities,
        logits, one-hot), argmax-ed.
      dtype: floating dtype of the result.

    Returns:
      Scalar in [0, 1], in ``dtype``.

    Raises:
      ValueError: shapes that are not ``[n]``/``[n, C]`` (``[n, 1]`` included),
        differing ``n``, or ``n == 0``.
      TypeError: ``[n]`` labels with a non-integer dtype.
    """
    dtype = _checks.float_dtype(dtype)
    t, p = _pair(y_true, y_pred, None)
    return _accuracy(t, p, dtype)


@functools.partial(jax.jit, static_argnums=2)
def _accuracy(t: Array, p: Array, dtype) -> Array:
    # Count in int32, divide once: exact for any n, unlike a float32 running mean.
    hits = jnp.sum(t == p, dtype=jnp.int32)
    return (hits.astype(dtype) / t.shape[0]).astype(dtype)


def confusion_matrix(y_true, y_pred, num_classes: int) -> Array:
    """Counts of (true class, predicted class) pairs.

    Args:
      y_true: ``[n]`` integer labels (or ``[n, C]`` scores, argmax-ed).
      y_pred: ``[n]`` integer labels or ``[n, C]`` scores, argmax-ed.
      num_classes: C, a Python int.

    Returns:
      int32 ``[C, C]``: entry ``[i, j]`` counts samples of true class ``i``
      predicted as ``j`` (rows = true, columns = predicted, as scikit-learn).

    Raises:
      ValueError: bad shapes, ``num_classes`` not a positive int, or (eagerly)
        labels outside ``[0, C)``.
      TypeError: ``[n]`` labels with a non-integer dtype.
    """
    t, p = _pair(y_true, y_pred, num_classes)
    return _confusion(t, p, num_classes)


# The numeric cores are jitted (static in C and dtype) so an eager call costs
# one compilation per shape rather than one per operation; inside a caller's
# jit they are simply inlined.
@functools.partial(jax.jit, static_argnums=2)
def _confusion(t: Array, p: Array, C: int) -> Array:
    # Under jit out-of-range labels cannot raise; they add 0 instead of landing
    # in a clipped (wrong) cell.
    valid = (t >= 0) & (t < C) & (p >= 0) & (p < C)
    cm = jnp.zeros((C, C), jnp.int32)
    return cm.at[jnp.clip(t, 0, C - 1), jnp.clip(p, 0, C - 1)].add(valid.astype(jnp.int32))


@functools.partial(jax.jit, static_argnums=1)
def _per_class(cm: Array, dtype) -> tuple[Array, Array, Array]:
    tp = jnp.diagonal(cm)
    predicted = jnp.sum(cm, axis=0)  # tp + fp
    actual = jnp.sum(cm, axis=1)  # tp + fn, the support
    # F1 = 2PR/(P+R) = 2tp / (2tp + fp + fn): one ratio, defined 0 when all are 0.
    return (_ratio(tp, predicted, dtype), _ratio(tp, actual, dtype),
            _ratio(2 * tp, predicted + actual, dtype))


def precision_recall_f1(y_true, y_pred, num_classes: int, *, dtype=jnp.float32
                        ) -> tuple[Array, Array, Array]:
    """Per-class precision, recall and F1.

    ``precision_c = tp / (tp + fp)``, ``recall_c = tp / (tp + fn)``,
    ``f1_c = 2 tp / (2 tp + fp + fn)`` (the harmonic mean of the two); each is 0
    when its denominator is 0 (scikit-learn's ``zero_division=0``).

    Args:
      y_true: ``[n]`` integer labels (or ``[n, C]`` scores, argmax-ed).
      y_pred: ``[n]`` integer labels or ``[n, C]`` scores, argmax-ed.
      num_classes: C, a Python int.
      dtype: floating dtype of the results.

    Returns:
      ``(precision, recall, f1)``, each ``[C]`` in ``dtype``.

    Raises:
      ValueError, TypeError: as ``confusion_matrix``.
    """
    return _per_class(confusion_matrix(y_true, y_pred, num_classes), _checks.float_dtype(dtype))


@jax.jit
def _macro(values: Array, cm: Array) -> Array:
    """Mean over classes occurring in y_true or y_pred (at least one does when n >= 1)."""
    present = (jnp.sum(cm, axis=0) + jnp.sum(cm, axis=1)) > 0
    return jnp.sum(jnp.where(present, values, 0)) / jnp.sum(present).astype(values.dtype)


def macro_f1(y_true, y_pred, num_classes: int, *, dtype=jnp.float32) -> Array:
    """Unweighted mean of per-class F1 over the classes that occur.

    Classes in neither ``y_true`` nor ``y_pred`` are left out of the mean (as
    scikit-learn's ``f1_score(average="macro")``); a class that occurs but is
    never predicted correctly counts as 0.

    Args:
      y_true: ``[n]`` integer labels (or ``[n, C]`` scores, argmax-ed).
      y_pred: ``[n]`` integer labels or ``[n, C]`` scores, argmax-ed.
      num_classes: C, a Python int.
      dtype: floating dtype of the result.

    Returns:
      Scalar in [0, 1], in ``dtype``.

    Raises:
      ValueError, TypeError: as ``confusion_matrix``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return _macro(_per_class(cm, _checks.float_dtype(dtype))[2], cm)


def classification_report(y_true, y_pred, num_classes: int, *, dtype=jnp.float32
                          ) -> dict[str, Any]:
    """Per-class and macro-averaged precision, recall and F1, plus accuracy.

    A plain dict (a pytree, so the whole report can be computed under ``jit``);
    a script can print it or turn values into floats with ``float(v)``.

    Args:
      y_true: ``[n]`` integer labels (or ``[n, C]`` scores, argmax-ed).
      y_pred: ``[n]`` integer labels or ``[n, C]`` scores, argmax-ed.
      num_classes: C, a Python int.
      dtype: floating dtype of the ratios.

    Returns:
      A dict with keys
        ``"precision"``, ``"recall"``, ``"f1"``: ``[C]`` in ``dtype``;
        ``"support"``: int32 ``[C]``, true samples per class;
        ``"macro_precision"``, ``"macro_recall"``, ``"macro_f1"``: scalars,
        means over the classes occurring in ``y_true`` or ``y_pred``;
        ``"accuracy"``: scalar;
        ``"confusion_matrix"``: int32 ``[C, C]``.

    Raises:
      ValueError, TypeError: as ``confusion_matrix``.
    """
    dtype = _checks.float_dtype(dtype)
    t, p = _pair(y_true, y_pred, num_classes)
    return _report(t, p, num_classes, dtype)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _report(t: Array, p: Array, num_classes: int, dtype) -> dict[str, Any]:
    cm = _confusion(t, p, num_classes)
    precision, recall, f1 = _per_class(cm, dtype)
    n = t.shape[0]
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": jnp.sum(cm, axis=1),
        "macro_precision": _macro(precision, cm),
        "macro_recall": _macro(recall, cm),
        "macro_f1": _macro(f1, cm),
        "accuracy": (jnp.trace(cm).astype(dtype) / n).astype(dtype),
        "confusion_matrix": cm,
    }


# --------------------------------------------------------------------------- regression


def _regression_pair(y_true, y_pred) -> tuple[Array, Array]:
    t, p = jnp.asarray(y_true), jnp.asarray(y_pred)
    # Equal shapes, not broadcastable ones: [n] against [n, 1] would silently
    # become [n, n] and give a plausible but wrong number.
    if t.shape != p.shape:
        raise InvalidArgument(f"y_true and y_pred must have the same shape; got {t.shape} and "
                         f"{p.shape}. Reshape one, e.g. y_pred[:, 0] or y_true[:, None].")
    if t.ndim not in (1, 2) or t.shape[0] == 0:
        raise InvalidArgument(f"y_true and y_pred must be non-empty [n] or [n, k]; got shape {t.shape}.")
    _checks.finite("y_true", t)
    _checks.finite("y_pred", p)
    # Promoted on purpose (targets are often float64 beside float32 outputs), by
    # JAX's standard rules whatever the caller's jax_numpy_dtype_promotion.
    with jax.numpy_dtype_promotion("standard"):
        dtype = jnp.promote_types(jnp.promote_types(t.dtype, p.dtype), jnp.float32)
    return t.astype(dtype), p.astype(dtype)


def mse(y_true, y_pred) -> Array:
    """Mean squared error: ``mean((y_pred - y_true)^2)`` over all entries.

    The plain mean, as scikit-learn's ``mean_squared_error`` (uniform over
    outputs) -- not the ``1/(2n)`` training-loss convention of
    ``funcnn.losses.mse``, which is half of this for one output.

    Args:
      y_true: ``[n]`` or ``[n, k]`` targets.
      y_pred: predictions of exactly the same shape.

    Returns:
      Scalar in the inputs' float dtype (at least float32).

    Raises:
      ValueError: shapes differ, are not ``[n]``/``[n, k]``, are empty, or
        (eagerly) hold NaN/inf.
    """
    t, p = _regression_pair(y_true, y_pred)
    return _mse(t, p)


@jax.jit
def _mse(t: Array, p: Array) -> Array:
    return jnp.mean((p - t) ** 2)


def rmse(y_true, y_pred) -> Array:
    """Root mean squared error, ``sqrt(mse(y_true, y_pred))``, in the units of y.

    Args:
      y_true: ``[n]`` or ``[n, k]`` targets.
      y_pred: predictions of exactly the same shape.

    Returns:
      Scalar in the inputs' float dtype (at least float32).

    Raises:
      ValueError: as ``mse``.
    """
    return jnp.sqrt(mse(y_true, y_pred))


def r2_score(y_true, y_pred) -> Array:
    """Coefficient of determination, averaged uniformly over outputs.

    Per output ``j``: ``R2_j = 1 - sum_i (y_ij - p_ij)^2 / sum_i (y_ij - mean_i y_ij)^2``.
    1 is perfect, 0 is as good as predicting the mean, and it can be negative.
    A constant target (zero denominator) gives 1 if predicted exactly, else 0,
    as scikit-learn's default ``force_finite=True``.

    Args:
      y_true: ``[n]`` or ``[n, k]`` targets.
      y_pred: predictions of exactly the same shape.

    Returns:
      Scalar: the mean of ``R2_j`` over the ``k`` outputs (scikit-learn's
      ``multioutput="uniform_average"``), in the inputs' float dtype.

    Raises:
      ValueError: as ``mse``.
    """
    t, p = _regression_pair(y_true, y_pred)
    return _r2(t, p)


@jax.jit
def _r2(t: Array, p: Array) -> Array:
    ss_res = jnp.sum((t - p) ** 2, axis=0)
    ss_tot = jnp.sum((t - jnp.mean(t, axis=0, keepdims=True)) ** 2, axis=0)
    perfect = jnp.where(ss_res == 0, 1.0, 0.0).astype(t.dtype)
    r2 = jnp.where(ss_tot > 0, 1 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1), perfect)
    return jnp.mean(r2)
