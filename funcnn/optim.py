"""Optimizers as composable gradient transformations (the optax design).

Contract (stated once): a ``GradientTransformation`` is a pair of pure functions

    state = init(params)
    updates, state = update(grads, state, params=None)

``params``, ``grads`` and ``updates`` are pytrees of the same structure (e.g.
``[{"W": [fan_in, fan_out], "b": [fan_out]}, ...]``); ``state`` is a NamedTuple
(or a tuple of them, for ``chain``) whose leaves are arrays only, so it can be
jitted, vmapped over a leading model axis and checkpointed. Every update count
is an int32 array, never a Python int. ``updates`` keep each gradient leaf's
shape and dtype; apply them with ``apply_updates(params, updates)``.

Named optimizers are chains of small ``scale_by_*`` transforms ending in
``scale_by_learning_rate``, whose ``learning_rate`` is a float or a schedule
``step -> lr`` (see ``funcnn.schedules``, re-exported here). A schedule is
evaluated at the number of updates done before this one: 0 on the first.

The full-batch L-BFGS minimiser lives in ``funcnn.lbfgs`` and is re-exported
here as ``lbfgs_minimize``; the Hessian-free (truncated Newton) minimiser
lives in ``funcnn.hessian_free`` and is re-exported as ``hessian_free``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, Union

import jax
import jax.numpy as jnp

from funcnn import _checks
from funcnn import schedules as _schedules
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.hessian_free import HessianFreeResult, hessian_free
from funcnn.lbfgs import LBFGSResult, lbfgs_minimize
from funcnn.schedules import (
    Schedule,
    constant_schedule,
    cosine_decay,
    cosine_decay_schedule,
    exponential_decay,
    piecewise_constant_schedule,
    step_decay_schedule,
    warmup_cosine_decay,
    warmup_cosine_decay_schedule,
)
from funcnn.typing import Array, OptState, Params, Updates

ScalarOrSchedule = Union[float, Schedule]  # noqa: UP007 - a runtime alias, kept for Python 3.10

_INT32_MAX = jnp.iinfo(jnp.int32).max


class TransformInitFn(Protocol):
    """``init(params) -> state``: the state for these params (as optax's ``TransformInitFn``)."""

    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    """``update(updates, state, params=None) -> (updates, state)``: one step of the transformation.

    ``updates`` (the gradients, for the first transformation of a chain) and
    ``params`` have one structure; the returned updates keep each leaf's shape
    and dtype (as optax's ``TransformUpdateFn``).
    """

    def __call__(self, updates: Updates, state: OptState, params: Params | None = None
                 ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pair of pure functions ``(init, update)``; see the module docstring."""

    init: TransformInitFn
    update: TransformUpdateFn


class EmptyState(NamedTuple):
    """State of a stateless transformation (no leaves)."""


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


def global_norm(tree: Params) -> Array:
    """The Euclidean norm of all leaves of a pytree taken together.

    Formula: ``||g|| = sqrt(sum over leaves and entries of g**2)``.

    Args:
      tree: a pytree of float arrays, any shapes.

    Returns:
      A scalar array, in the widest dtype of the leaves.
    """
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def apply_updates(params: Params, updates: Updates) -> Params:
    """Adds updates to parameters: ``theta <- theta + u``.

    Each update leaf is cast to its parameter's dtype first, so float32
    parameters stay float32 even if the update was computed in float64.

    Args:
      params: a pytree of arrays.
      updates: a pytree of the same structure and leaf shapes.

    Returns:
      New parameters, same structure, shapes and dtypes as ``params``.

    Raises:
      ValueError: if the tree structures differ.
    """
    return jax.tree.map(
        lambda p, u: jnp.asarray(p) + jnp.asarray(u).astype(jnp.asarray(p).dtype),
        params, updates,
    )


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Composes transformations, applied left to right.

    Formula: ``u = T_n(...T_2(T_1(g)))``; ``state = (state_1, ..., state_n)``.

    Args:
      *transforms: GradientTransformations.

    Returns:
      A GradientTransformation whose state is the tuple of the inner states.

    Raises:
      TypeError: if an argument is not a GradientTransformation.
      ValueError (from ``update``): a state that is not one state per
        transform of the structure each ``init`` makes, e.g. another
        optimizer's state.
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise InvalidType(
                f"chain argument {i} must be a GradientTransformation; got {type(t).__name__}."
            )

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        _check_chain_state(state, transforms, updates)
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def _check_chain_state(state, transforms, updates) -> None:
    """A chain's state must be one state per transform, each the structure its ``init`` makes.

    Without this, ``zip`` would silently pair the states of another chain
    (``adam``'s given to ``adamw``) with the wrong transforms, dropping some,
    and return updates of the wrong sign and scale. The expected structure
    comes from tracing each ``init`` abstractly (at trace time: free under jit).
    """
    if not isinstance(state, tuple) or len(state) != len(transforms):
        got = f"a {type(state).__name__} of {len(state)} state(s)" if isinstance(state, tuple) \
            else type(state).__name__
        raise InvalidArgument(f"this optimizer chains {len(transforms)} transformations, so its state must be a "
                         f"tuple of {len(transforms)} states; got {got}. The state was made by a different "
                         "optimizer: make it with this optimizer's init(params).")
    for i, (t, s) in enumerate(zip(transforms, state)):
        want = jax.eval_shape(t.init, updates)
        if not _checks.same_structure(s, want):
            raise InvalidArgument(f"state {i} of this chain has structure {jax.tree.structure(s)}, but "
                                  f"transformation {i} keeps {jax.tree.structure(want)}: the state was made by a "
                                  "different optimizer. Make it with this optimizer's init(params).")


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


def _memoized(make):
    """Equal hyperparameters give the same optimizer object.

    jit caches compiled programs by the functions they close over, so two
    ``adam(1e-3)`` calls that built two objects would compile a sweep's train
    step twice; memoising makes equal optimizers share one compilation.
    Unhashable arguments (e.g. an array learning rate) just build a new one.
    """
    cached = functools.lru_cache(maxsize=256)(make)

    @functools.wraps(make)
    def build(*args, **kwargs):
        try:
            return cached(*args, **kwargs)
        except TypeError as e:
            if "unhashable" not in str(e):
                raise
            return make(*args, **kwargs)

    return build


@_memoized
def sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """Plain stochastic gradient descent (Robbins & Monro 1951).

    Formula: ``theta <- theta - lr(t) g``.

    Args:
      learning_rate: a non-negative float or a schedule ``step -> lr``.

    Returns:
      A GradientTransformation.

    Raises:
      ValueError: if a float ``learning_rate`` is negative or not finite.

    Example (one step: ``w - 0.1 g``)::

        >>> import jax.numpy as jnp, numpy as np
        >>> from funcnn import optim
        >>> opt = optim.sgd(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
        >>> print(np.round(np.asarray(optim.apply_updates(params, updates)["w"]), 6))
        [ 0.95 -1.6 ]
    """
    return scale_by_learning_rate(learning_rate)


@_memoized
def momentum(learning_rate: ScalarOrSchedule, beta: float = 0.9) -> GradientTransformation:
    """Classical (heavy-ball) momentum (Polyak 1964; Sutskever et al. 2013, eq. 1-2).

    Formula::

        v <- beta v - lr(t) g
        theta <- theta + v

    The learning rate enters the velocity at the step it is used, so a
    schedule's past rates stay in ``v``; this differs from optax's
    ``v <- beta v + g; theta <- theta - lr(t) v`` when the rate varies.

    Args:
      learning_rate: a non-negative float or a schedule ``step -> lr``.
      beta: the momentum coefficient, in [0, 1).

    Returns:
      A GradientTransformation; its state holds ``v`` (in parameter units).

    Raises:
      ValueError: on a bad ``learning_rate`` or ``beta`` outside [0, 1).
    """
    beta = _checks.probability("beta", beta)
    # Scaling by -lr BEFORE the trace is what makes v the paper's velocity.
    return chain(scale_by_learning_rate(learning_rate), trace(beta))


@_memoized
def nesterov(learning_rate: ScalarOrSchedule, beta: float = 0.9) -> GradientTransformation:
    """Nesterov momentum in the Sutskever/Bengio reformulation.

    Nesterov's accelerated gradient (Nesterov 1983; Sutskever et al. 2013)
    evaluates the gradient at the look-ahead point ``theta + beta v``. Writing
    the parameters as that look-ahead point (Bengio, Boulanger-Lewandowski &
    Pascanu 2013, "Advances in optimizing recurrent networks", eq. 7) gives an
    update that needs only the gradient at the current parameters::

        v <- beta v - lr(t) g
        theta <- theta + beta v - lr(t) g        (v is the new velocity)

    Args:
      learning_rate: a non-negative float or a schedule ``step -> lr``.
      beta: the momentum coefficient, in [0, 1).

    Returns:
      A GradientTransformation; its state holds ``v`` (in parameter units).

    Raises:
      ValueError: on a bad ``learning_rate`` or ``beta`` outside [0, 1).
    """
    beta = _checks.probability("beta", beta)
    return chain(scale_by_learning_rate(learning_rate), trace(beta, nesterov=True))


@_memoized
def adagrad(
    learning_rate: ScalarOrSchedule, initial_accumulator_value: float = 0.1, eps: float = 1e-7
) -> GradientTransformation:
    """Adagrad (Duchi, Hazan & Singer 2011).

    Formula::

        G <- G + g**2                    (G starts at initial_accumulator_value)
        theta <- theta - lr(t) g / (sqrt(G) + eps)

    Args:
      learning_rate: a non-negative float or a schedule ``step -> lr``.
      initial_accumulator_value: the starting value of G, >= 0.
      eps: added to the denominator, >= 0.

    Returns:
      A GradientTransformation.

    Raises:
      ValueError: on a bad learning rate or negative accumulator value / eps.
    """
    return chain(scale_by_adagrad(initial_accumulator_value, eps),
                 scale_by_learning_rate(learning_rate))


@_memoized
def rmsprop(learning_rate: ScalarOrSchedule, decay: float = 0.9, eps: float = 1e-8) -> GradientTransformation:
    """RMSProp (Tieleman & Hinton 2012, Coursera lecture 6.5).

    Formula::

        v <- decay v + (1 - decay) g**2  (v starts at 0)
        theta <- theta - lr(t) g / (sqrt(v) + eps)

    Args:
      learning_rate: a non-negative float or a schedule ``step -> lr``.
      decay: decay of the running mean square, in [0, 1).
      eps: added to the denominator, >= 0.

    Returns:
      A GradientTransformation.

    Raises:
      ValueError: on a bad learning rate, ``decay`` outside [0, 1) or negative eps.
    """
    return chain(scale_by_rms(decay, eps), scale_by_learning_rate(learning_rate))


@_memoized
def adam(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Adam (Kingma & Ba 2015, Algorithm 1).

    Formula, with ``t`` counting from 1 and m, v starting at 0::

        m <- b1 m + (1 - b1) g           m_hat = m / (1 - b1**t)
        v <- b2 v + (1 - b2) g**2        v_hat = v / (1 - b2**t)
        theta <- theta - lr(t - 1) m_hat / (sqrt(v_hat) + eps)

    (a schedule is evaluated at ``t - 1``, the updates done before this one).

    Args:
      learning_rate: a non-negative float or a schedule ``step -> lr``.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.

    Returns:
      A GradientTransformation.

    Raises:
      ValueError: on a bad learning rate, rates outside [0, 1) or negative eps.

    Example (Adam's first step is ``lr * g / |g|``, about ``lr`` per entry,
    whatever the gradient's scale)::

        >>> import jax.numpy as jnp, numpy as np
        >>> from funcnn import optim
        >>> opt = optim.adam(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = opt.update({"w": jnp.array([0.5, -4.0])}, opt.init(params), params)
        >>> print(np.round(np.asarray(optim.apply_updates(params, updates)["w"]), 6))
        [ 0.9 -1.9]
    """
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))


@_memoized
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2).

    Formula: Adam's ``m_hat``, ``v_hat`` (see ``adam``), then::

        theta <- theta - lr(t - 1) (m_hat / (sqrt(v_hat) + eps) + weight_decay theta)

    The decay uses ``theta`` before the update and is scaled by the whole
    learning rate, as in optax and PyTorch; the paper scales it by the schedule
    multiplier eta_t only (its base rate alpha multiplies the Adam term alone).

    Args:
      learning_rate: a non-negative float or a schedule ``step -> lr``.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the square root, >= 0.
      weight_decay: the decoupled decay coefficient, >= 0.

    Returns:
      A GradientTransformation; its ``update`` needs ``params``.

    Raises:
      ValueError: on bad hyperparameters, or (at update) if ``params`` is None.
    """
    return chain(scale_by_adam(b1, b2, eps), add_decayed_weights(weight_decay),
                 scale_by_learning_rate(learning_rate))


__all__ = [
    # Base API.
    "GradientTransformation",
    "EmptyState",
    "ScaleByScheduleState",
    "ScaleByAdamState",
    "ScaleByRmsState",
    "ScaleByAdagradState",
    "TraceState",
    "apply_updates",
    "chain",
    "global_norm",
    # Transformations.
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "scale_by_adam",
    "scale_by_rms",
    "scale_by_adagrad",
    "trace",
    "clip_by_global_norm",
    "add_decayed_weights",
    # Named optimizers.
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    # Re-exported schedules: the list lives in funcnn.schedules.
    *_schedules.__all__,
    # Re-exported L-BFGS (funcnn.lbfgs).
    "LBFGSResult",
    "lbfgs_minimize",
    # Re-exported Hessian-free (funcnn.hessian_free).
    "HessianFreeResult",
    "hessian_free",
]
