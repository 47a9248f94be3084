"""Named optimizers: chains of ``funcnn.optim.transforms`` (optax's ``alias``).

Each ends in ``scale_by_learning_rate``; each is memoised on its
hyperparameters, so ``adam(1e-3)`` twice is one value and a compiled train
step is reused.
"""
from __future__ import annotations

import functools

from funcnn import _checks
from funcnn.optim.base import GradientTransformation, chain
from funcnn.optim.transforms import (
    ScalarOrSchedule,
    add_decayed_weights,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)


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
