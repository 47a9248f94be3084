"""The bundled digits set, splits, scaling, batching and shifts (``funcnn.data``'s own functions).

Conventions: see ``funcnn.data``.
"""
from __future__ import annotations

import functools
import importlib.resources
import math
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.typing import Array

# --------------------------------------------------------------------------- checks


def check_xy(x, y, *, name_x: str = "x", name_y: str = "y") -> int:
    """Validates a pair of sample arrays before any work is done on them.

    Args:
      x: array-like ``[n, ...]`` (at least 1-D).
      y: array-like ``[n, ...]`` (at least 1-D), the same ``n``.
      name_x, name_y: the argument names used in error messages.

    Returns:
      ``n``, the number of samples.

    Raises:
      ValueError: either is a scalar or empty, their first axes differ, or a
        concrete float array holds NaN or inf (skipped under tracing).
    """
    shapes = {}
    for name, a in ((name_x, x), (name_y, y)):
        shape = np.shape(a)
        if len(shape) == 0:
            raise InvalidArgument(f"{name} must be an array of samples [n, ...]; got a scalar {a!r}.")
        if shape[0] == 0:
            raise InvalidArgument(f"{name} is empty (shape {shape}); at least one sample is needed.")
        shapes[name] = shape
    if shapes[name_x][0] != shapes[name_y][0]:
        raise InvalidArgument(
            f"{name_x} and {name_y} must have the same number of samples (first axis); got "
            f"{name_x} {shapes[name_x]} and {name_y} {shapes[name_y]}.")
    for name, a in ((name_x, x), (name_y, y)):
        _checks.finite(name, a)
    return int(shapes[name_x][0])


def check_batch_size(batch_size, n: int, *, name: str = "batch_size") -> int:
    """Checks ``1 <= batch_size <= n`` for a set of ``n`` samples.

    Args:
      batch_size: the requested batch size.
      n: the number of samples available.
      name: the argument name used in error messages.

    Returns:
      ``batch_size`` as a Python int.

    Raises:
      ValueError: ``batch_size`` is not a positive int, or exceeds ``n``.
    """
    batch_size = _checks.positive_int(name, batch_size)
    if batch_size > n:
        raise InvalidArgument(f"{name}={batch_size} is larger than the {n} samples available; "
                         f"allowed are integers in [1, {n}].")
    return batch_size


def _to_device(a) -> Array:
    """A JAX array of ``a``; NumPy data goes by ``device_put`` (no per-shape compile,
    unlike ``jnp.asarray``), with JAX's dtype canonicalization."""
    return a if isinstance(a, jax.Array) else jax.device_put(np.asarray(a))


def _count(name: str, size, n: int) -> int:
    """A split size as a sample count: a fraction in (0, 1) or an int count in [1, n)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if not 1 <= size < n:
            raise InvalidArgument(f"{name}={size} as a count must be in [1, {n - 1}] for {n} samples.")
        return int(size)
    if isinstance(size, (float, np.floating)) and 0.0 < size < 1.0:
        # ceil like scikit-learn, but after rounding away float noise, so that
        # 0.15 * 100 = 15.000000000000002 gives 15 samples, not 16.
        count = max(1, math.ceil(round(float(size) * n, 6)))
        if count < n:
            return count
    raise InvalidArgument(f"{name} must be a fraction in (0, 1) or an int count in [1, {n - 1}], "
                     f"leaving at least one of the {n} samples for training; got {size!r}.")


# --------------------------------------------------------------------------- digits


def load_digits(*, dtype=jnp.float32, flatten: bool = True) -> tuple[Array, Array]:
    """Loads the bundled 8x8 handwritten digits (scikit-learn's ``load_digits``).

    1797 images, 174 to 183 per digit, read from the package (no network).

    Args:
      dtype: floating dtype of the images.
      flatten: if True images are ``[1797, 64]`` (row-major), else ``[1797, 8, 8]``.

    Returns:
      ``(x, y)``: ``x`` in ``dtype`` with values in [0, 1] (pixel count / 16,
      exact in any float type); ``y`` int32 ``[1797]`` digits 0..9.

    Raises:
      TypeError: ``dtype`` not floating.
    """
    dtype = _checks.float_dtype(dtype)
    resource = importlib.resources.files("funcnn").joinpath("_data").joinpath("digits.npz")
    with resource.open("rb") as f, np.load(f, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    x = images.astype(dtype) / dtype.type(16)
    if flatten:
        x = x.reshape(x.shape[0], -1)
    return jax.device_put(x), jax.device_put(labels.astype(np.int32))


# --------------------------------------------------------------------------- splits


def _split_indices(y, n: int, part_sizes: list[int], key, stratify: bool) -> list[np.ndarray]:
    """Partitions ``range(n)`` into ``part_sizes`` (in order) plus the rest, shuffled.

    Stratified: each part takes from each class in proportion to its size in
    what is left, with the rounding shortfall given to the classes with the
    largest fractional shares (ties broken at random), so every part's total is
    exact and each class's count is within one of proportional.
    """
    classes = int(np.unique(np.asarray(y)).size) if stratify else 1
    perm, tie_order = (np.asarray(a) for a in _permutations(key, n, classes))
    if not stratify:
        edges = np.cumsum([0, *part_sizes])
        return [perm[a:b] for a, b in zip(edges[:-1], edges[1:])] + [perm[edges[-1]:]]
    # Classes in the order of the permutation: taking the first few of a class is
    # a random draw from it, and each part stays in shuffled order.
    _, label_of = np.unique(np.asarray(y)[perm], return_inverse=True)
    label_of = label_of.reshape(-1)
    remaining = np.bincount(label_of)
    taken = np.zeros(n, bool)
    parts = []
    for size in part_sizes:
        # Exact integer shares: remaining_c * size / total = count_c + rest_c / total.
        count, rest = np.divmod(remaining * size, remaining.sum())
        short = size - count.sum()  # < number of classes with rest > 0
        count[tie_order[np.argsort(-rest[tie_order], kind="stable")[:short]]] += 1
        mask = np.zeros(n, bool)
        for c in np.flatnonzero(count):
            free = np.flatnonzero((label_of == c) & ~taken)
            mask[free[:count[c]]] = True
        taken |= mask
        remaining = remaining - count
        parts.append(perm[mask])
    return parts + [perm[~taken]]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _permutations(key, n: int, classes: int):
    """(permutation of n, permutation of classes) from the two halves of ``key``: one compiled program.

    Drawn eagerly, the split and the two permutations compile five programs,
    which cost more than the whole split of a small data set.
    """
    k_perm, k_ties = jax.random.split(key)
    return jax.random.permutation(k_perm, n), jax.random.permutation(k_ties, classes)


def _take(x, y, parts: list[np.ndarray]) -> tuple[Array, ...]:
    """``(x[p] for p in parts)`` then ``(y[p] ...)``, gathered on the host.

    NumPy indexing: a JAX gather would compile anew for every split shape, which
    costs more than the copy for data sets that fit in memory.
    """
    x, y = np.asarray(x), np.asarray(y)
    return tuple(_to_device(a[p]) for a in (x, y) for p in parts)


def _check_stratify(y) -> None:
    y_np = _checks.concrete(y)
    if y_np is None or y_np.ndim != 1 or not np.issubdtype(y_np.dtype, np.integer):
        raise InvalidArgument(
            f"stratify=True needs integer class labels y of shape [n]; got "
            f"{getattr(y_np, 'dtype', type(y).__name__)} {np.shape(y)}. For one-hot rows "
            f"pass y.argmax(axis=1), for [n, 1] binary floats y[:, 0].astype(int).")


def train_test_split(x, y, *, test_size=0.3, key, stratify: bool = False
                     ) -> tuple[Array, Array, Array, Array]:
    """Splits samples at random into a train and a test set (scikit-learn's order).

    Args:
      x: ``[n, ...]`` samples.
      y: ``[n, ...]`` targets; integer labels ``[n]`` when ``stratify``.
      test_size: a fraction in (0, 1), giving ``ceil(n * test_size)`` test
        samples as scikit-learn does, or an int count in ``[1, n - 1]``.
      key: a jax.random key; the same key gives the same split.
      stratify: if True each class keeps (within one sample) its proportion of
        ``y`` in both sets.

    Returns:
      ``(x_train, x_test, y_train, y_test)`` as JAX arrays, rows in shuffled
      order, disjoint and together covering every sample once.

    Raises:
      ValueError: bad ``x``/``y`` (see ``check_xy``), bad ``test_size``,
        ``stratify`` with non-integer or non-``[n]`` labels.
      TypeError: ``key`` not a jax.random key.
    """
    n = check_xy(x, y)
    _checks.key("key", key)
    n_test = _count("test_size", test_size, n)
    if stratify:
        _check_stratify(y)
    test, train = _split_indices(y, n, [n_test], key, stratify)
    x_train, x_test, y_train, y_test = _take(x, y, [train, test])
    return x_train, x_test, y_train, y_test


def train_val_test_split(x, y, *, val_size=0.15, test_size=0.15, key, stratify: bool = False
                         ) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Splits samples at random into train, validation and test sets.

    Sizes are resolved against the full ``n`` (``ceil(n * size)`` for a
    fraction); the training set gets the rest, which must be at least one sample.

    Args:
      x: ``[n, ...]`` samples.
      y: ``[n, ...]`` targets; integer labels ``[n]`` when ``stratify``.
      val_size: a fraction in (0, 1) or an int count.
      test_size: a fraction in (0, 1) or an int count.
      key: a jax.random key; the same key gives the same split.
      stratify: if True each class keeps (within one sample) its proportion of
        ``y`` in all three sets.

    Returns:
      ``(x_train, x_val, x_test, y_train, y_val, y_test)``, disjoint, covering
      every sample once, rows in shuffled order.

    Raises:
      ValueError: bad ``x``/``y``, bad sizes or sizes leaving no training
        sample, ``stratify`` with non-integer or non-``[n]`` labels.
      TypeError: ``key`` not a jax.random key.
    """
    n = check_xy(x, y)
    _checks.key("key", key)
    n_val = _count("val_size", val_size, n)
    n_test = _count("test_size", test_size, n)
    if n_val + n_test >= n:
        raise InvalidArgument(f"val_size={val_size!r} and test_size={test_size!r} take {n_val} + "
                         f"{n_test} of the {n} samples, leaving none to train on; make them "
                         f"smaller.")
    if stratify:
        _check_stratify(y)
    test, val, train = _split_indices(y, n, [n_test, n_val], key, stratify)
    x_train, x_val, x_test, y_train, y_val, y_test = _take(x, y, [train, val, test])
    return x_train, x_val, x_test, y_train, y_val, y_test


# --------------------------------------------------------------------------- encoding


def one_hot(y, num_classes: int | None = None, *, dtype=jnp.float32) -> Array:
    """Integer labels to one-hot rows.

    Works inside ``jit`` when ``num_classes`` is given; there a label outside
    ``[0, num_classes)`` gives an all-zero row (checked eagerly otherwise).

    Args:
      y: ``[n]`` integer labels.
      num_classes: the number of classes C; inferred as ``max(y) + 1`` when
        None, which needs concrete ``y`` (not inside ``jit``).
      dtype: floating dtype of the result.

    Returns:
      ``[n, C]`` in ``dtype``, with a single 1 per row.

    Raises:
      TypeError: ``y`` not an integer array, ``dtype`` not floating.
      ValueError: ``y`` not 1-D, ``num_classes`` missing under tracing or not a
        positive int, or (concrete ``y``) labels outside ``[0, C)``.
    """
    dtype = _checks.float_dtype(dtype)
    y = _to_device(y)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise InvalidType(f"y must hold integer class labels; got dtype {y.dtype}. Convert with "
                        f"y.astype(jnp.int32) if the values are whole numbers.")
    if y.ndim != 1:
        raise InvalidArgument(f"y must be 1-D labels [n]; got shape {y.shape}.")
    if num_classes is None:
        y_np = _checks.concrete(y)
        if y_np is None:
            raise InvalidArgument("num_classes is required when y is traced (inside jit/vmap): "
                             "the output shape [n, num_classes] must be known at trace time.")
        if y_np.size == 0:
            raise InvalidArgument("num_classes cannot be inferred from an empty y; pass it.")
        num_classes = int(y_np.max()) + 1
    num_classes = _checks.positive_int("num_classes", num_classes)
    _checks.labels_in_range("y", y, num_classes)
    return jax.nn.one_hot(y, num_classes, dtype=dtype)


# --------------------------------------------------------------------------- scaling


class Standardizer(NamedTuple):
    """Per-feature statistics fitted on training data; apply is ``(x - mean) / std``."""

    mean: Array  # shape=x.shape[1:], the training mean of each feature
    std: Array  # shape=x.shape[1:], the divisor: population std, or 1 where it is <= eps


def standardize_fit(x_train, *, eps: float = 1e-8, dtype=None) -> Standardizer:
    """Fits per-feature mean and standard deviation on the training set only.

    The std is the population one (``ddof=0``), as scikit-learn's
    ``StandardScaler``. Features whose std is at most ``eps`` (constant columns,
    such as the always-blank border pixels of the digits) get a divisor of 1,
    also as scikit-learn: they are centred to 0 rather than blown up to
    NaN/inf or to huge values by a tiny divisor.

    Args:
      x_train: ``[n, ...]`` training samples, n >= 1.
      eps: stds at or below this count as zero variance.
      dtype: floating dtype of the statistics; None means ``x_train``'s dtype
        when it is floating, else float32.

    Returns:
      ``Standardizer(mean, std)``, each ``x_train.shape[1:]``.

    Raises:
      ValueError: ``x_train`` scalar, empty, or holding NaN/inf; ``eps`` < 0.
      TypeError: ``dtype`` not floating.
    """
    shape = np.shape(x_train)
    if len(shape) == 0 or shape[0] == 0:
        raise InvalidArgument(f"x_train must be a non-empty array [n, ...]; got shape {shape}.")
    _checks.finite("x_train", x_train)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise InvalidArgument(f"eps must be a number >= 0; got {eps!r}.")
    x = _to_device(x_train)
    if dtype is None:
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    return _fit(x, float(eps), _checks.float_dtype(dtype))


# Jitted so a fit compiles once per shape instead of once per operation.
@functools.partial(jax.jit, static_argnums=2)
def _fit(x: Array, eps: float, dtype) -> Standardizer:
    x = x.astype(dtype)
    mean = jnp.mean(x, axis=0)
    std = jnp.std(x, axis=0)
    return Standardizer(mean, jnp.where(std > eps, std, jnp.ones_like(std)))


def standardize_apply(stats: Standardizer, x) -> Array:
    """Applies fitted statistics: ``(x - stats.mean) / stats.std``. Jittable.

    Args:
      stats: a ``Standardizer`` from ``standardize_fit``.
      x: ``[m, ...]`` samples with the feature shape the stats were fitted on.

    Returns:
      ``[m, ...]`` standardized samples, in the promoted float dtype of ``x``
      and the stats.

    Raises:
      ValueError: ``x``'s feature shape differs from the stats', or a concrete
        ``x`` holds NaN/inf.
    """
    x = _to_device(x)
    if x.shape[1:] != stats.mean.shape or x.ndim == 0:
        raise InvalidArgument(f"x has shape {x.shape}, but the stats were fitted on features of "
                         f"shape {tuple(stats.mean.shape)}; expected [m, "
                         f"{', '.join(map(str, stats.mean.shape))}].")
    _checks.finite("x", x)
    return _apply(stats, x)


# Compiled, not NumPy: in float32, XLA's result differs from NumPy's in the last bit in
# about a quarter of the entries, and runs must stay bit-identical to earlier ones.
@jax.jit
def _apply(stats: Standardizer, x: Array) -> Array:
    # [None] makes the batch broadcast explicit (rank promotion may be set to raise).
    return (x - stats.mean[None]) / stats.std[None]


def standardize(x_train, *others, eps: float = 1e-8) -> tuple[Array, ...]:
    """Fits on ``x_train`` only, then standardizes it and every array in ``others``.

    Statistics never come from validation or test data, which would leak them
    into training.

    Args:
      x_train: ``[n, ...]`` training samples.
      *others: arrays ``[m_i, ...]`` with the same feature shape (e.g. x_test).
      eps: see ``standardize_fit``.

    Returns:
      ``(x_train_std, *others_std)``, one array per input, in order.

    Raises:
      ValueError: as ``standardize_fit`` and ``standardize_apply``.
    """
    stats = standardize_fit(x_train, eps=eps)
    return tuple(standardize_apply(stats, a) for a in (x_train, *others))


# --------------------------------------------------------------------------- batching


SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # right, left, down, up by one pixel


def augment_shifts(x, y, *, image_shape: tuple[int, int] = (8, 8), shifts=SHIFTS) -> tuple[Array, Array]:
    """Adds copies of each image shifted by whole pixels (zero fill): classic image augmentation.

    A digit moved by one pixel is still the same digit, so the shifted copies
    teach the network the small translation invariance it cannot infer from
    8x8 pixels on its own. Apply it to the training split only.

    Args:
      x: images ``[n, h * w]`` (flattened, row-major) or ``[n, h, w]``.
      y: labels ``[n, ...]``.
      image_shape: ``(h, w)``.
      shifts: ``(dy, dx)`` pixel offsets; each adds one copy of the data.

    Returns:
      ``(x_aug, y_aug)``: ``[n * (1 + len(shifts)), ...]``, originals first, then
      one block per shift in order.

    Raises:
      ValueError: x's size per sample does not match ``image_shape``; shifts not
        smaller than the image; mismatched x/y.
    """
    check_xy(x, y)
    xn = np.asarray(x)
    h, w = image_shape
    if int(np.prod(xn.shape[1:])) != h * w:
        raise InvalidArgument(f"x holds {int(np.prod(xn.shape[1:]))} values per sample, but image_shape={image_shape} "
                         f"needs {h * w}.")
    im = xn.reshape(-1, h, w)
    out = [im]
    for dy, dx in shifts:
        if abs(dy) >= h or abs(dx) >= w:
            raise InvalidArgument(f"shift {(dy, dx)} must be smaller than image_shape={image_shape}.")
        s = np.zeros_like(im)
        s[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            im[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        out.append(s)
    xa = np.concatenate(out).reshape((-1,) + xn.shape[1:])
    ya = np.concatenate([np.asarray(y)] * (1 + len(shifts)))
    return jnp.asarray(xa), jnp.asarray(ya)


def minibatches(x, y, *, batch_size: int, key=None, drop_last: bool = False
                ) -> Iterator[tuple[Array, Array]]:
    """Yields ``(xb, yb)`` minibatches, one pass over the data, for hand-written loops.

    Arguments are validated when this is called, before the first batch. The
    data is moved to the device once; each batch is a slice of it.

    Args:
      x: ``[n, ...]`` samples.
      y: ``[n, ...]`` targets.
      batch_size: samples per batch, in ``[1, n]``.
      key: a jax.random key to shuffle with (a fresh key per epoch gives a new
        order); None keeps the original order.
      drop_last: if True the final batch is skipped when smaller than
        ``batch_size``, so every batch has the same shape (one ``jit`` trace).

    Returns:
      An iterator of ``(xb [b, ...], yb [b, ...])`` with ``b = batch_size``
      except possibly the last; ``ceil(n / batch_size)`` batches, or
      ``floor(n / batch_size)`` with ``drop_last``.

    Raises:
      ValueError: bad ``x``/``y`` (see ``check_xy``) or ``batch_size``.
      TypeError: ``key`` given but not a jax.random key.
    """
    n = check_xy(x, y)
    batch_size = check_batch_size(batch_size, n)
    if key is not None:
        _checks.key("key", key)
    x, y = _to_device(x), _to_device(y)
    if key is not None:
        order = jax.random.permutation(key, n)
        x, y = x[order], y[order]
    stop = n - n % batch_size if drop_last else n

    def batches():
        for start in range(0, stop, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]

    return batches()
