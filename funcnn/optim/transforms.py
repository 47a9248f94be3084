"""Small gradient transformations, each one rule of an optimizer (optax's ``transform``).

Each ``scale_by_*`` returns a ``GradientTransformation`` (``funcnn.optim.base``)
whose state is the NamedTuple below it; named optimizers chain them
(``funcnn.optim.aliases``). A ``learning_rate`` is a float or a schedule
``step -> lr`` evaluated at the number of updates done before this one.
"""
from __future__ import annotations

from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

from funcnn import _checks
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.optim.base import EmptyState, GradientTransformation, global_norm
from funcnn.optim.schedules import Schedule
from funcnn.typing import Array, Updates

ScalarOrSchedule = Union[float, Schedule]  # noqa: UP007 - a runtime alias, kept for Python 3.10

_INT32_MAX = jnp.iinfo(jnp.int32).max


# The field name ``count`` shadows tuple.count, as in optax's states: kept, since
# saved optimizer states and users' code name it.
class ScaleByScheduleState(NamedTuple):
    count: Array  # type: ignore[assignment]  # shape=(), dtype=int32; updates done so far


class ScaleByAdamState(NamedTuple):
    count: Array  # type: ignore[assignment]  # shape=(), dtype=int32; updates done so far
    mu: Updates  # like params (each leaf its shape and dtype); first moment m
    nu: Updates  # like params (each leaf its shape and dtype); second moment v


class ScaleByRmsState(NamedTuple):
    nu: Updates  # like params (each leaf its shape and dtype); EMA of g**2


class ScaleByAdagradState(NamedTuple):
    sum_of_squares: Updates  # like params (each leaf its shape and dtype); G


class TraceState(NamedTuple):
    trace: Updates  # like params (each leaf its shape and dtype); velocity v


def _increment(count: Array) -> Array:
    # Saturate instead of wrapping: after 2**31 - 1 updates a wrapped count
    # would go negative and restart schedules and bias corrections.
    return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX)


def _zeros_count() -> Array:
    return jnp.zeros([], jnp.int32)


def _learning_rate(value) -> ScalarOrSchedule:
    if callable(value):
        return value
    return _checks.number("learning_rate", value, low=0.0)


def scale(step_size: float) -> GradientTransformation:
    """Multiplies updates by a constant: ``u <- step_size * u``.

    Args:
      step_size: a finite number (give it a minus sign for descent).

    Returns:
      A stateless GradientTransformation.

    Raises:
      ValueError: if ``step_size`` is not a finite number.
    """
    step_size = _checks.number("step_size", step_size)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: step_size * g, updates), state

    return GradientTransformation(init, update)


def scale_by_schedule(schedule: Schedule) -> GradientTransformation:
    """Multiplies updates by a schedule of the update count: ``u <- s(t) * u``.

    ``t`` is the number of updates done before this one (0 on the first).

    Args:
      schedule: a function ``step (int32 array, shape ()) -> scalar``.

    Returns:
      A GradientTransformation with state ``ScaleByScheduleState``.

    Raises:
      TypeError: if ``schedule`` is not callable.
    """
    if not callable(schedule):
        raise InvalidType(f"schedule must be callable step -> value; got {schedule!r}.")

    def init(params):
        del params
        return ScaleByScheduleState(count=_zeros_count())

    def update(updates, state, params=None):
        del params
        s = schedule(state.count)
        # The schedule may return float64 under x64; keep each leaf's dtype.
        updates = jax.tree.map(lambda g: jnp.asarray(s, g.dtype) * g, updates)
        return updates, ScaleByScheduleState(count=_increment(state.count))

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """Multiplies updates by minus the learning rate: ``u <- -lr(t) * u``.

    Args:
      learning_rate: a non-negative float, or a schedule ``step -> lr``
        evaluated at the update count (0 on the first update).

    Returns:
      A GradientTransformation (stateless for a float, else it counts steps).

    Raises:
      ValueError: if a float ``learning_rate`` is negative or not finite.
    """
    learning_rate = _learning_rate(learning_rate)
    if callable(learning_rate):
        return scale_by_schedule(lambda t: -learning_rate(t))
    return scale(-learning_rate)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Rescales by Adam's bias-corrected moments (Kingma & Ba 2015, Algorithm 1).

    Formula, with ``t`` counting from 1::

        m <- b1 m + (1 - b1) g          m_hat = m / (1 - b1**t)
        v <- b2 v + (1 - b2) g**2       v_hat = v / (1 - b2**t)
        u = m_hat / (sqrt(v_hat) + eps)

    ``eps`` is outside the square root, as in the paper.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator for stability, >= 0.

    Returns:
      A GradientTransformation with state ``ScaleByAdamState`` (m, v start at 0).

    Raises:
      ValueError: if a rate is outside [0, 1) or ``eps`` is negative.
    """
    b1, b2 = _checks.probability("b1", b1), _checks.probability("b2", b2)
    eps = _checks.number("eps", eps, low=0.0)

    def init(params):
        return ScaleByAdamState(
            count=_zeros_count(),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        count = _increment(state.count)

        def rescale(m, v):
            # The step t in the leaf's dtype: float32 leaves stay float32 under x64.
            t = count.astype(m.dtype)
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            return m_hat / (jnp.sqrt(v_hat) + eps)

        updates = jax.tree.map(rescale, mu, nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init, update)


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8) -> GradientTransformation:
    """Rescales by a running root mean square of the gradients (RMSProp).

    Formula: ``v <- decay v + (1 - decay) g**2``; ``u = g / (sqrt(v) + eps)``,
    with ``v`` starting at 0 and ``eps`` outside the square root (as in Adam
    and PyTorch; optax puts it inside).

    Args:
      decay: decay of the running mean, in [0, 1).
      eps: added to the denominator for stability, >= 0.

    Returns:
      A GradientTransformation with state ``ScaleByRmsState``.

    Raises:
      ValueError: if ``decay`` is outside [0, 1) or ``eps`` is negative.
    """
    decay = _checks.probability("decay", decay)
    eps = _checks.number("eps", eps, low=0.0)

    def init(params):
        return ScaleByRmsState(nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        nu = jax.tree.map(lambda v, g: decay * v + (1 - decay) * g * g, state.nu, updates)
        updates = jax.tree.map(lambda g, v: g / (jnp.sqrt(v) + eps), updates, nu)
        return updates, ScaleByRmsState(nu=nu)

    return GradientTransformation(init, update)


def scale_by_adagrad(initial_accumulator_value: float = 0.1, eps: float = 1e-7) -> GradientTransformation:
    """Rescales by the root of the summed squared gradients (Adagrad).

    Formula: ``G <- G + g**2``; ``u = g / (sqrt(G) + eps)``, with ``G``
    starting at ``initial_accumulator_value`` and ``eps`` outside the square
    root (the Keras form, whose defaults these are).

    Args:
      initial_accumulator_value: the starting value of every entry of G, >= 0.
      eps: added to the denominator for stability, >= 0.

    Returns:
      A GradientTransformation with state ``ScaleByAdagradState``.

    Raises:
      ValueError: if either argument is negative or not finite.
    """
    initial_accumulator_value = _checks.number(
        "initial_accumulator_value", initial_accumulator_value, low=0.0)
    eps = _checks.number("eps", eps, low=0.0)

    def init(params):
        return ScaleByAdagradState(sum_of_squares=jax.tree.map(
            lambda p: jnp.full_like(p, initial_accumulator_value), params))

    def update(updates, state, params=None):
        del params
        G = jax.tree.map(lambda s, g: s + g * g, state.sum_of_squares, updates)
        updates = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, G)
        return updates, ScaleByAdagradState(sum_of_squares=G)

    return GradientTransformation(init, update)


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    """Accumulates a decaying sum of updates (momentum).

    Formula: ``v <- decay v + u``; output ``v``, or ``u + decay v`` (with the
    new ``v``) when ``nesterov``. ``v`` starts at 0.

    Args:
      decay: the momentum coefficient, in [0, 1).
      nesterov: use the Nesterov look-ahead form.

    Returns:
      A GradientTransformation with state ``TraceState``.

    Raises:
      ValueError: if ``decay`` is outside [0, 1).
    """
    decay = _checks.probability("decay", decay)

    def init(params):
        return TraceState(trace=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        v = jax.tree.map(lambda t, g: decay * t + g, state.trace, updates)
        updates = jax.tree.map(lambda g, t: g + decay * t, updates, v) if nesterov else v
        return updates, TraceState(trace=v)

    return GradientTransformation(init, update)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescales all updates together so their global norm is at most ``max_norm``.

    Formula: ``u <- u * max_norm / max(||u||, max_norm)`` with ``||u||`` the
    norm over all leaves (see ``global_norm``); updates below the bound pass
    unchanged, and the direction is never altered.

    Args:
      max_norm: the bound, > 0.

    Returns:
      A stateless GradientTransformation.

    Raises:
      ValueError: if ``max_norm`` is not a positive finite number.
    """
    max_norm = _checks.number("max_norm", max_norm, low=0.0, low_open=True)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        # max(norm, max_norm) in the denominator: no division by a zero norm
        # and exactly 1 below the bound.
        factor = max_norm / jnp.maximum(global_norm(updates), max_norm)
        return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float = 1e-4) -> GradientTransformation:
    """Adds decoupled weight decay: ``u <- u + weight_decay * theta``.

    Place it before ``scale_by_learning_rate`` so the decay is scaled by the
    learning rate (AdamW).

    Args:
      weight_decay: the coefficient, >= 0.

    Returns:
      A stateless GradientTransformation; its ``update`` needs ``params``.

    Raises:
      ValueError: if ``weight_decay`` is negative, or (at update) ``params`` is None.
    """
    weight_decay = _checks.number("weight_decay", weight_decay, low=0.0)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise InvalidArgument("add_decayed_weights needs params: call update(grads, state, params).")
        updates = jax.tree.map(
            lambda g, p: g + (weight_decay * p).astype(g.dtype), updates, params)
        return updates, state

    return GradientTransformation(init, update)
