"""Argument validation shared by every module: one place for the error wording.

Conventions:
  * Shape, dtype and name errors are raised at trace time, so they cost nothing
    inside ``jit``.
  * Value errors (NaN/inf, labels out of range) need concrete values: they are
    checked when the array is concrete (eager calls, data loading) and skipped
    under tracing, where they are the caller's duty (see ``concrete``).
Every message names the argument, what was given and what is allowed.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from funcnn.errors import InvalidArgument, InvalidType


def concrete(a) -> np.ndarray | None:
    """Returns ``a`` as a NumPy array if its values are known now, else None (a tracer)."""
    try:
        return np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def choice(name: str, value, allowed: Iterable[str]) -> str:
    """Checks that ``value`` is one of ``allowed``; suggests the closest name on a typo."""
    allowed = list(allowed)
    if not isinstance(value, str) or value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidArgument(f"{name}={value!r} is not allowed; choose one of {allowed}.{hint}")
    return value


def floating(name: str, a) -> None:
    """Raises TypeError unless ``a`` has a floating dtype."""
    dtype = getattr(a, "dtype", None)
    if dtype is None or not jax.numpy.issubdtype(dtype, jax.numpy.floating):
        raise InvalidType(
            f"{name} must be a floating-point array; got dtype {dtype}. "
            f"Convert it first, e.g. {name}.astype(jnp.float32)."
        )


def finite(name: str, a) -> None:
    """Raises ValueError if a concrete ``a`` holds NaN or inf (skipped under tracing)."""
    v = concrete(a)
    if v is not None and v.size and jax.numpy.issubdtype(v.dtype, jax.numpy.floating) \
            and not np.all(np.isfinite(v)):
        bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
        raise InvalidArgument(f"{name} contains {bad} NaN or inf value(s); inputs must be finite.")


def labels_in_range(name: str, y, num_classes: int) -> None:
    """Raises ValueError if concrete integer labels fall outside [0, num_classes)."""
    v = concrete(y)
    if v is not None and v.size and (v.min() < 0 or v.max() >= num_classes):
        raise InvalidArgument(
            f"{name} holds labels in [{v.min()}, {v.max()}]; allowed are integers in "
            f"[0, {num_classes})."
        )


def positive_int(name: str, value) -> int:
    """Checks ``value`` is a positive Python int (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InvalidArgument(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def probability(name: str, value, *, upper_open: bool = True) -> float:
    """Checks 0 <= value < 1 (or <= 1 when ``upper_open`` is False)."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and value >= 0.0 and (value < 1.0 if upper_open else value <= 1.0)
    if not ok:
        rng = "[0, 1)" if upper_open else "[0, 1]"
        raise InvalidArgument(f"{name} must be a number in {rng}; got {value!r}.")
    return float(value)


def feature_rows(name: str, x, num_features: int) -> np.ndarray | jax.Array:
    """Checks ``x`` is a non-empty ``[n, num_features]`` array of finite real numbers; returns it.

    Refuses complex numbers (casting would drop the imaginary part), strings,
    objects, an empty array and NaN/inf, naming ``name`` and what was given.
    """
    a = np.asarray(x) if not isinstance(x, jax.Array) else x
    kind = np.dtype(a.dtype).kind
    if kind == "c":
        raise InvalidType(f"{name} holds complex numbers (dtype {a.dtype}); inputs must be real: "
                          "the imaginary part would be silently dropped.")
    if kind not in "biuf":
        raise InvalidType(f"{name} must hold numbers; got dtype {a.dtype}.")
    if a.ndim != 2 or a.shape[1] != num_features:
        raise InvalidArgument(f"{name} must hold rows of {num_features} features [n, {num_features}]; "
                              f"got shape {tuple(a.shape)}.")
    if a.shape[0] == 0:
        raise InvalidArgument(f"{name} is empty (shape {tuple(a.shape)}); at least one row is needed.")
    finite(name, a)
    return a


def same_structure(a, b) -> bool:
    """Whether two pytrees have one tree structure (containers, keys and leaf count)."""
    return bool(jax.tree.structure(a) == jax.tree.structure(b))  # type: ignore[operator]  # jax's stub of PyTreeDef


def x64_enabled() -> bool:
    """Whether 64-bit JAX is on (``jax_enable_x64``): float64 arrays stay float64 instead of narrowing."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


def number(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """Checks ``value`` is a finite real Python/NumPy number within the bounds given; returns it as a float.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``.
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        if low is not None and high is not None:
            what = f"a number in {lo}, {hi}"
        elif low is not None:
            what = f"a finite number {'>' if low_open else '>='} {low}"
        elif high is not None:
            what = f"a finite number {'<' if high_open else '<='} {high}"
        else:
            what = "a finite number"
        raise InvalidArgument(f"{name} must be {what}; got {value!r}.")
    return float(value)


def nonnegative_int(name: str, value) -> int:
    """Checks ``value`` is an integer >= 0 (not a bool); returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer; got {value!r}.")
    return int(value)


def key(name: str, value) -> None:
    """Raises TypeError unless ``value`` is one jax.random key (typed, or a raw uint32 key)."""
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype == np.uint32 and shape is not None and len(shape) == 1
    if not (typed and shape == ()) and not raw:
        raise InvalidType(
            f"{name} must be a single jax.random key, e.g. jax.random.key(0); got "
            f"{value!r} (type {type(value).__name__}). Integers and NumPy generators are "
            f"not accepted: randomness comes only from explicit keys."
        )


def float_dtype(dtype) -> np.dtype:
    """Checks ``dtype`` is floating and returns the one JAX will actually use.

    float64 without ``jax_enable_x64`` becomes float32 here, silently, rather than
    with one JAX warning per array created.
    """
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d is None or not jnp.issubdtype(d, jnp.floating):
        raise InvalidType(f"dtype must be a floating dtype such as jnp.float32; got {dtype!r}.")
    return jax.dtypes.canonicalize_dtype(d)
