"""Small generated data sets for teaching and tests; re-exported by ``funcnn.data``.

Every generator has the signature ``make_*(n, *, key, noise=..., dtype=jnp.float32)
-> (x, y)``, draws all its randomness from ``key`` (the same key gives the same
set), returns ``x`` as ``[n, 2]`` (``[n, 1]`` for ``make_sine``) in ``dtype``, and
returns the samples in shuffled order so a plain slice is a fair subset.
``noise`` is always the standard deviation of Gaussian noise added to the
coordinates (to ``y`` for ``make_sine``), in the units of ``x``.

Label conventions: the two classic sigmoid/BCE teaching problems
(``make_two_lines``, ``make_xor``) default to float labels ``[n, 1]`` in {0, 1}
and take ``labels="int"`` for ``[n]`` int32; ``make_moons`` and ``make_spirals``
return int32 labels ``[n]`` for softmax/cross-entropy.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks
from funcnn.errors import InvalidArgument
from funcnn.typing import Array

__all__ = ["make_two_lines", "make_xor", "make_sine", "make_moons", "make_spirals"]

# make_two_lines geometry, in the band's own frame (t along it, s across it).
# Class 1: |s| <= HALF_WIDTH - MARGIN; class 0: HALF_WIDTH + MARGIN <= |s| <= OUTER.
# The gap of 2 * MARGIN around each line is what lets a 2-2-1 net reach 100%.
_HALF_WIDTH, _MARGIN, _OUTER, _LENGTH = 0.5, 0.1, 1.5, 1.5
LABELS = ("float", "int")  # the label formats of the binary generators



def _check_noise(noise) -> float:
    ok = isinstance(noise, (int, float, np.floating)) and not isinstance(noise, bool)
    if not ok or not math.isfinite(noise) or noise < 0:
        raise InvalidArgument(f"noise must be a finite number >= 0; got {noise!r}.")
    return float(noise)


def _checked(n, key, noise, dtype, labels=None) -> tuple[int, float, np.dtype]:
    """The arguments every generator checks, in one order: n, key, noise, labels, dtype.

    Returns ``(n, noise, dtype)`` normalised; raises as the generators document.
    """
    n = _checks.positive_int("n", n)
    _checks.key("key", key)
    noise = _check_noise(noise)
    if labels is not None:
        _checks.choice("labels", labels, LABELS)
    return n, noise, _checks.float_dtype(dtype)


def _pick(labels: str, y_int: Array, y_float: Array) -> Array:
    return y_int if labels == "int" else y_float


def _balanced_labels(key, n: int, classes: int) -> Array:
    """``[n]`` int32 labels with counts differing by at most one, in random order."""
    return jax.random.permutation(key, jnp.arange(n, dtype=jnp.int32) % classes)


def _binary_labels(y: Array, dtype) -> tuple[Array, Array]:
    """Both label forms, ``[n]`` int32 and ``[n, 1]`` float; the caller keeps one.

    Returning both keeps ``labels`` out of the compiled function's cache key.
    """
    return y.astype(jnp.int32), y.astype(dtype)[:, None]


def make_two_lines(n: int, *, key, noise: float = 0.0, labels: str = "float",
                   dtype=jnp.float32) -> tuple[Array, Array]:
    """Points that no single line separates but two parallel lines do.

    Class 1 lies in the band between the lines ``x2 = x1 + 0.5*sqrt(2)`` and
    ``x2 = x1 - 0.5*sqrt(2)`` (signed distance ``s`` to the diagonal
    ``x2 = x1`` within ``+-(0.5 - 0.1)``); class 0 lies on both sides of it
    (``0.6 <= |s| <= 1.5``), so the convex hull of class 0 contains class 1 and
    no single line separates them. Along the band, points cover ``[-1.5, 1.5]``.
    With ``noise=0`` every point is at least 0.1 from both lines, so a 2-2-1
    network, e.g. ``sigmoid(c - a*relu(s - 0.5) - a*relu(-s - 0.5))`` with
    ``s = (x2 - x1)/sqrt(2)``, classifies all of them correctly. Classes are
    balanced (counts differ by at most one); class 0 is split evenly in
    expectation between the two sides.

    Args:
      n: number of points, a positive int.
      key: a jax.random key.
      noise: std of Gaussian noise added to both coordinates; above ~0.05 some
        points cross the margin and 100% accuracy is no longer guaranteed.
      labels: ``"float"`` for ``[n, 1]`` labels in {0., 1.} in ``dtype``
        (sigmoid/BCE output), or ``"int"`` for ``[n]`` int32 labels.
      dtype: floating dtype of ``x`` (and of float labels).

    Returns:
      ``(x, y)``: ``x`` ``[n, 2]``; ``y`` ``[n, 1]`` float or ``[n]`` int32.

    Raises:
      ValueError: ``n`` not a positive int, ``noise`` negative, unknown ``labels``.
      TypeError: ``key`` not a jax.random key, ``dtype`` not floating.
    """
    n, noise, dtype = _checked(n, key, noise, dtype, labels)
    x, y_int, y_float = _two_lines(key, n, noise, dtype)
    return x, _pick(labels, y_int, y_float)


# Each generator's body is one jitted function, static in n and dtype: a new n
# then costs one compilation instead of one per eager operation (~10x faster).
@functools.partial(jax.jit, static_argnums=(1, 3))
def _two_lines(key, n, noise, dtype):
    k_y, k_t, k_s, k_side, k_noise = jax.random.split(key, 5)
    y = _balanced_labels(k_y, n, 2)
    t = jax.random.uniform(k_t, (n,), dtype, -_LENGTH, _LENGTH)
    u = jax.random.uniform(k_s, (n,), dtype)
    inner = (2.0 * u - 1.0) * (_HALF_WIDTH - _MARGIN)
    lo = _HALF_WIDTH + _MARGIN
    side = jnp.where(jax.random.bernoulli(k_side, 0.5, (n,)), 1.0, -1.0).astype(dtype)
    outer = side * (lo + u * (_OUTER - lo))
    s = jnp.where(y == 1, inner, outer)
    # Rotate the (t, s) frame by 45 degrees: t runs along x2 = x1, s across it.
    c = jnp.asarray(1.0 / math.sqrt(2.0), dtype)
    x = jnp.stack([c * (t - s), c * (t + s)], axis=1)
    x = x + noise * jax.random.normal(k_noise, (n, 2), dtype)
    return (x.astype(dtype), *_binary_labels(y, dtype))


def make_xor(n: int, *, key, noise: float = 0.1, labels: str = "float",
             dtype=jnp.float32) -> tuple[Array, Array]:
    """The XOR problem: four Gaussian blobs at the corners ``(+-1, +-1)``.

    A point's label is 1 when its corner's coordinates differ in sign (corners
    ``(-1, 1)`` and ``(1, -1)``), else 0. Corners are used equally often (counts
    differ by at most one). With ``noise=0`` the set is exactly the four corners.

    Args:
      n: number of points, a positive int.
      key: a jax.random key.
      noise: std of the Gaussian blob around each corner.
      labels: ``"float"`` for ``[n, 1]`` labels in {0., 1.} in ``dtype``, or
        ``"int"`` for ``[n]`` int32 labels.
      dtype: floating dtype of ``x`` (and of float labels).

    Returns:
      ``(x, y)``: ``x`` ``[n, 2]``; ``y`` ``[n, 1]`` float or ``[n]`` int32.

    Raises:
      ValueError: ``n`` not a positive int, ``noise`` negative, unknown ``labels``.
      TypeError: ``key`` not a jax.random key, ``dtype`` not floating.
    """
    n, noise, dtype = _checked(n, key, noise, dtype, labels)
    x, y_int, y_float = _xor(key, n, noise, dtype)
    return x, _pick(labels, y_int, y_float)


@functools.partial(jax.jit, static_argnums=(1, 3))
def _xor(key, n, noise, dtype):
    k_corner, k_noise = jax.random.split(key)
    corner = _balanced_labels(k_corner, n, 4)  # bits (b1, b0) pick the signs
    b0, b1 = corner % 2, corner // 2
    centres = jnp.stack([2 * b0 - 1, 2 * b1 - 1], axis=1).astype(dtype)
    x = centres + noise * jax.random.normal(k_noise, (n, 2), dtype)
    return (x.astype(dtype), *_binary_labels(b0 ^ b1, dtype))


def make_sine(n: int, *, key, noise: float = 0.1,
              x_range: tuple[float, float] = (-math.pi, math.pi),
              dtype=jnp.float32) -> tuple[Array, Array]:
    """A 1-D regression set: ``y = sin(x) + noise * N(0, 1)``, x uniform in ``x_range``.

    Args:
      n: number of points, a positive int.
      key: a jax.random key.
      noise: std of the Gaussian noise added to ``y``.
      x_range: ``(low, high)`` with ``low < high``, both finite.
      dtype: floating dtype of ``x`` and ``y``.

    Returns:
      ``(x, y)``: both ``[n, 1]`` in ``dtype`` (unsorted).

    Raises:
      ValueError: ``n`` not a positive int, ``noise`` negative, bad ``x_range``.
      TypeError: ``key`` not a jax.random key, ``dtype`` not floating.
    """
    n, noise, dtype = _checked(n, key, noise, dtype)
    try:
        low, high = (float(v) for v in x_range)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidArgument(f"x_range must be a pair (low, high) of finite numbers with low < high; "
                         f"got {x_range!r}.")
    return _sine(key, n, noise, low, high, dtype)


@functools.partial(jax.jit, static_argnums=(1, 5))
def _sine(key, n, noise, low, high, dtype):
    k_x, k_noise = jax.random.split(key)
    x = jax.random.uniform(k_x, (n, 1), dtype, low, high)
    y = jnp.sin(x) + noise * jax.random.normal(k_noise, (n, 1), dtype)
    return x, y.astype(dtype)


def make_moons(n: int, *, key, noise: float = 0.1, dtype=jnp.float32) -> tuple[Array, Array]:
    """Two interleaving half circles, as scikit-learn's ``make_moons``.

    Class 0 is the upper half of the unit circle, ``(cos t, sin t)``; class 1 is
    ``(1 - cos t, 0.5 - sin t)``, with ``t`` evenly spaced on ``[0, pi]`` in each
    class (``n // 2`` points in class 0, the rest in class 1), then Gaussian noise.

    Args:
      n: number of points, a positive int.
      key: a jax.random key.
      noise: std of Gaussian noise added to both coordinates.
      dtype: floating dtype of ``x``.

    Returns:
      ``(x, y)``: ``x`` ``[n, 2]`` in ``dtype``; ``y`` ``[n]`` int32 in {0, 1}.

    Raises:
      ValueError: ``n`` not a positive int, ``noise`` negative.
      TypeError: ``key`` not a jax.random key, ``dtype`` not floating.
    """
    n, noise, dtype = _checked(n, key, noise, dtype)
    return _moons(key, n, noise, dtype)


@functools.partial(jax.jit, static_argnums=(1, 3))
def _moons(key, n, noise, dtype):
    n0 = n // 2
    n1 = n - n0
    t0 = jnp.linspace(0.0, math.pi, n0, dtype=dtype)
    t1 = jnp.linspace(0.0, math.pi, n1, dtype=dtype)
    upper = jnp.stack([jnp.cos(t0), jnp.sin(t0)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(t1), 0.5 - jnp.sin(t1)], axis=1)
    x = jnp.concatenate([upper, lower], axis=0)
    y = jnp.concatenate([jnp.zeros(n0, jnp.int32), jnp.ones(n1, jnp.int32)])
    k_perm, k_noise = jax.random.split(key)
    order = jax.random.permutation(k_perm, n)
    x = x[order] + noise * jax.random.normal(k_noise, (n, 2), dtype)
    return x.astype(dtype), y[order]


def make_spirals(n: int, *, key, noise: float = 0.05, classes: int = 2,
                 dtype=jnp.float32) -> tuple[Array, Array]:
    """``classes`` interleaved spiral arms, one per class.

    Arm ``k`` is ``r * (cos theta, sin theta)`` with ``r`` evenly spaced on
    ``[0.1, 1]`` and ``theta = 2*pi*(r + k/classes)`` (one full turn per arm,
    arms rotated evenly), then Gaussian noise. Class counts differ by at most
    one. Arms are ``2*pi*r/classes`` apart along the circle of radius ``r``, so
    for ``noise`` well below ``0.3/classes`` the classes barely overlap.

    Args:
      n: number of points, a positive int.
      key: a jax.random key.
      noise: std of Gaussian noise added to both coordinates.
      classes: number of arms, a positive int.
      dtype: floating dtype of ``x``.

    Returns:
      ``(x, y)``: ``x`` ``[n, 2]`` in ``dtype``; ``y`` ``[n]`` int32 in ``[0, classes)``.

    Raises:
      ValueError: ``n`` or ``classes`` not a positive int, ``noise`` negative.
      TypeError: ``key`` not a jax.random key, ``dtype`` not floating.
    """
    n, noise, dtype = _checked(n, key, noise, dtype)
    classes = _checks.positive_int("classes", classes)
    return _spirals(key, n, noise, classes, dtype)


@functools.partial(jax.jit, static_argnums=(1, 3, 4))
def _spirals(key, n, noise, classes, dtype):
    y = jnp.arange(n, dtype=jnp.int32) % classes
    # Position of each point along its own arm: 0..count_k-1 over count_k points.
    counts = np.bincount(np.arange(n) % classes, minlength=classes)
    rank = jnp.arange(n) // classes
    denom = jnp.asarray(np.maximum(counts - 1, 1), dtype)[y]
    r = 0.1 + 0.9 * rank.astype(dtype) / denom
    theta = 2.0 * math.pi * (r + y.astype(dtype) / classes)
    x = jnp.stack([r * jnp.cos(theta), r * jnp.sin(theta)], axis=1)
    k_perm, k_noise = jax.random.split(key)
    order = jax.random.permutation(k_perm, n)
    x = x[order] + noise * jax.random.normal(k_noise, (n, 2), dtype)
    return x.astype(dtype), y[order]
