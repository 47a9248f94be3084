"""Learning-rate schedules: pure functions ``step -> lr``.

Contract (stated once): every constructor here validates its hyperparameters
and returns a ``Schedule``, a pure function

    lr = schedule(step)       step: int or integer array, any shape (usually
                              ``()``, or ``[K]`` under ``vmap``); lr: float
                              array of the same shape, default float dtype
                              (float32, or float64 with ``jax_enable_x64``).

A schedule closes over Python numbers only, so it can be jitted, vmapped and
passed around as a value. Optimizers call it with their update count, which is
0 on the first update (optax's convention), so ``schedule(0)`` is the first
learning rate used.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp

from funcnn import _checks
from funcnn.errors import InvalidArgument
from funcnn.typing import Array

Schedule = Callable[[Array], Array]  # step [...] int -> lr [...] float




def _float_step(step) -> Array:
    # The default float dtype: float64 under x64, else float32 (exact for steps < 2**24).
    return jnp.asarray(step, dtype=jnp.result_type(float))


def constant_schedule(value: float) -> Schedule:
    """A constant learning rate.

    Formula: ``lr(t) = value``.

    Args:
      value: the learning rate, a finite number.

    Returns:
      A schedule ``step -> lr``; ``lr`` has the shape of ``step``.

    Raises:
      ValueError: if ``value`` is not a finite number.
    """
    value = _checks.number("value", value)

    def schedule(step):
        return jnp.full(jnp.shape(step), value, dtype=jnp.result_type(float))

    return schedule


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """A constant learning rate multiplied by a factor at each boundary (optax semantics).

    Formula: ``lr(t) = init_value * prod_{b_i <= t} scale_i``, i.e. from step
    ``b_i`` on (inclusive) the rate is multiplied by ``scale_i``.

    Args:
      init_value: the rate before the first boundary.
      boundaries_and_scales: ``{boundary_step: scale}``; boundaries are
        non-negative ints, scales non-negative numbers. None or ``{}`` gives a
        constant schedule.

    Returns:
      A schedule ``step -> lr``; ``lr`` has the shape of ``step``.

    Raises:
      ValueError: on a non-finite ``init_value``, a negative or non-integer
        boundary, or a negative scale.
    """
    init_value = _checks.number("init_value", init_value)
    items = []
    for b, s in dict(boundaries_and_scales or {}).items():
        items.append((_checks.nonnegative_int("boundaries_and_scales boundary", b),
                      _checks.number(f"boundaries_and_scales[{b}]", s, low=0.0)))
    items.sort()

    def schedule(step):
        step = jnp.asarray(step)
        lr = jnp.full(step.shape, init_value, dtype=jnp.result_type(float))
        for b, s in items:
            lr = jnp.where(step >= b, lr * s, lr)
        return lr

    return schedule


def step_decay_schedule(init_value: float, decay_rate: float, step_size: int) -> Schedule:
    """Multiplies the rate by ``decay_rate`` every ``step_size`` steps.

    Formula: ``lr(t) = init_value * decay_rate ** floor(t / step_size)``.

    Args:
      init_value: the rate for steps ``0 .. step_size - 1``.
      decay_rate: the factor applied at each multiple of ``step_size``, > 0.
      step_size: steps between decays, a positive int.

    Returns:
      A schedule ``step -> lr``; ``lr`` has the shape of ``step``.

    Raises:
      ValueError: on a non-finite ``init_value``, ``decay_rate <= 0`` or a
        non-positive ``step_size``.
    """
    init_value = _checks.number("init_value", init_value)
    decay_rate = _checks.number("decay_rate", decay_rate, low=0.0, low_open=True)
    step_size = _checks.positive_int("step_size", step_size)

    def schedule(step):
        step = jnp.asarray(step)
        # Integer floor division is exact; t / step_size in float32 can round
        # k * step_size - 1 up to k for large t.
        if jnp.issubdtype(step.dtype, jnp.integer):
            k = jnp.floor_divide(step, step_size)
        else:
            k = jnp.floor(step / step_size)
        return init_value * decay_rate ** _float_step(k)

    return schedule


def exponential_decay(
    init_value: float,
    decay_rate: float,
    transition_steps: int,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """Exponential decay, continuous or staircase, optionally clipped at ``end_value``.

    Formula: ``p = t / transition_steps`` (``floor`` of it when ``staircase``),
    ``lr(t) = init_value * decay_rate ** p``; with ``end_value`` the result is
    clipped so it never passes ``end_value`` (a floor when ``decay_rate < 1``,
    a ceiling when ``decay_rate > 1``), as in optax.

    Args:
      init_value: the rate at step 0.
      decay_rate: the factor per ``transition_steps`` steps, > 0.
      transition_steps: steps over which the rate is multiplied by
        ``decay_rate``, a positive int.
      staircase: if True the exponent is an integer, so the rate is piecewise
        constant.
      end_value: optional bound the rate never passes.

    Returns:
      A schedule ``step -> lr``; ``lr`` has the shape of ``step``.

    Raises:
      ValueError: on ``decay_rate <= 0``, a non-positive ``transition_steps``
        or non-finite values.
    """
    init_value = _checks.number("init_value", init_value)
    decay_rate = _checks.number("decay_rate", decay_rate, low=0.0, low_open=True)
    transition_steps = _checks.positive_int("transition_steps", transition_steps)
    if end_value is not None:
        end_value = _checks.number("end_value", end_value)

    def schedule(step):
        step = jnp.asarray(step)
        if staircase and jnp.issubdtype(step.dtype, jnp.integer):
            p = _float_step(jnp.floor_divide(step, transition_steps))
        else:
            p = _float_step(step) / transition_steps
            if staircase:
                p = jnp.floor(p)
        lr = init_value * decay_rate**p
        if end_value is not None:
            lr = jnp.maximum(lr, end_value) if decay_rate < 1 else jnp.minimum(lr, end_value)
        return lr

    return schedule


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` (Loshchilov & Hutter 2017, SGDR).

    Formula: ``tau = min(t, decay_steps) / decay_steps``,
    ``lr(t) = init_value * ((1 - alpha) * 0.5 * (1 + cos(pi tau)) + alpha)``;
    constant at ``alpha * init_value`` from ``decay_steps`` on.

    Args:
      init_value: the rate at step 0.
      decay_steps: the step at which the final value is reached, a positive int.
      alpha: the final value as a fraction of ``init_value``.

    Returns:
      A schedule ``step -> lr``; ``lr`` has the shape of ``step``.

    Raises:
      ValueError: on a non-positive ``decay_steps`` or non-finite values.
    """
    init_value = _checks.number("init_value", init_value)
    decay_steps = _checks.positive_int("decay_steps", decay_steps)
    alpha = _checks.number("alpha", alpha)

    def schedule(step):
        tau = jnp.minimum(_float_step(step), decay_steps) / decay_steps
        return init_value * ((1 - alpha) * 0.5 * (1 + jnp.cos(jnp.pi * tau)) + alpha)

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
) -> Schedule:
    """Linear warmup to ``peak_value``, then cosine decay to ``end_value`` (optax semantics).

    ``decay_steps`` counts from step 0 and INCLUDES the warmup, as in optax:
    the cosine part lasts ``decay_steps - warmup_steps`` steps and the rate
    equals ``end_value`` at step ``decay_steps`` and after.

    Formula, with ``W = warmup_steps``, ``D = decay_steps``:
      t < W:  ``lr(t) = init_value + (peak_value - init_value) * t / W``
      t >= W: ``tau = min(t - W, D - W) / (D - W)``,
              ``lr(t) = end_value + (peak_value - end_value) * 0.5 * (1 + cos(pi tau))``

    Args:
      init_value: the rate at step 0.
      peak_value: the rate at step ``warmup_steps``.
      warmup_steps: length of the linear warmup, a non-negative int (0: no warmup).
      decay_steps: total steps of warmup plus decay, an int > ``warmup_steps``.
      end_value: the rate from step ``decay_steps`` on.

    Returns:
      A schedule ``step -> lr``; ``lr`` has the shape of ``step``.

    Raises:
      ValueError: on negative ``warmup_steps``, ``decay_steps <= warmup_steps``
        or non-finite values.
    """
    init_value = _checks.number("init_value", init_value)
    peak_value = _checks.number("peak_value", peak_value)
    end_value = _checks.number("end_value", end_value)
    warmup_steps = _checks.nonnegative_int("warmup_steps", warmup_steps)
    decay_steps = _checks.positive_int("decay_steps", decay_steps)
    if decay_steps <= warmup_steps:
        raise InvalidArgument(
            f"decay_steps must exceed warmup_steps (decay_steps includes the warmup); "
            f"got decay_steps={decay_steps}, warmup_steps={warmup_steps}."
        )
    cosine_steps = decay_steps - warmup_steps

    def schedule(step):
        t = _float_step(step)
        # max(W, 1): with W = 0 the warmup branch is never selected, but it
        # must not divide by zero.
        warm = init_value + (peak_value - init_value) * t / max(warmup_steps, 1)
        tau = jnp.clip(t - warmup_steps, 0, cosine_steps) / cosine_steps
        cos = end_value + (peak_value - end_value) * 0.5 * (1 + jnp.cos(jnp.pi * tau))
        return jnp.where(t < warmup_steps, warm, cos)

    return schedule


# Short names, as used in the optax-style call `funcnn.optim.cosine_decay(...)`.
cosine_decay = cosine_decay_schedule
warmup_cosine_decay = warmup_cosine_decay_schedule

__all__ = [
    "Schedule",
    "constant_schedule",
    "piecewise_constant_schedule",
    "step_decay_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "cosine_decay",
    "warmup_cosine_decay",
]
