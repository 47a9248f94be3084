"""Losses over a batch, computed stably from the logits, with their gradients.

Conventions (n = batch size, m = output width):

* ``mse``: L = 1/(2n) * sum_{i,k} (y_ik - t_ik)^2 on the *activated* output y.
  The 1/2 makes dL/dy = (y - t)/n, the convention of the reference material.
* ``cross_entropy``: L = -1/n * sum_i sum_k t_ik log softmax(z)_ik, from the
  logits z via log-softmax (never log of a softmax that underflowed). ``t`` is
  integer class labels ``[n]`` or target rows ``[n, m]`` (one-hot or soft).
* ``binary_cross_entropy``: the logistic cost summed over outputs, averaged over
  samples (multi-label and one-vs-all):
  L = -1/n * sum_{i,k} [t log s(z) + (1 - t) log(1 - s(z))]
    =  1/n * sum_{i,k} [softplus(z) - t z]        (the stable form used here).

Each (output activation, loss) pair that makes sense is in ``PAIRS``. The
gradient with respect to the logits comes from a fused shortcut where one
applies (softmax + cross_entropy: (p * sum_k t_k - t)/n, which is (p - t)/n for
one-hot rows; sigmoid + binary_cross_entropy: (s - t)/n), otherwise from
dL/dy pushed through the output activation's vector-Jacobian product.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from funcnn import _checks
from funcnn.activations import OutputActivation

Array = jax.Array

# loss name -> output activations it may follow. Categorical cross-entropy needs
# a distribution (softmax); the logistic cost needs per-output probabilities
# (sigmoid). Squared error makes sense after any output.
PAIRS = {
    "mse": ("identity", "sigmoid", "softmax"),
    "cross_entropy": ("softmax",),
    "binary_cross_entropy": ("sigmoid",),
}


def _targets(t: Array, m: int) -> Array:
    """Integer labels [n] -> one-hot rows [n, m] in the float dtype; rows pass through."""
    if jnp.issubdtype(t.dtype, jnp.integer):
        return jax.nn.one_hot(t, m)
    return t


class LossFns(NamedTuple):
    """A (loss, output) pair: its value and its gradient with respect to the logits."""

    name: str
    value: Callable[[Array, Array, Array], Array]  # (z, y, t) -> scalar mean loss
    dlogits: Callable[[Array, Array, Array], Array]  # (z, y, t) -> dL/dz [n, m]
    dtargets: Callable[[Array, Array, Array], Array]  # (z, y, t) -> dL/dt (float t only)


def _n(z):
    return z.shape[0]


def _mse(out: OutputActivation) -> LossFns:
    def value(z, y, t):
        return jnp.sum((y - t) ** 2) / (2 * _n(z))

    def dlogits(z, y, t):
        return out.vjp(z, y, (y - t) / _n(z))

    return LossFns("mse", value, dlogits, lambda z, y, t: (t - y) / _n(z))


def _cross_entropy_value(z, y, t):
    del y
    logp = jax.nn.log_softmax(z, axis=-1)
    if jnp.issubdtype(t.dtype, jnp.integer):
        # Gather instead of a one-hot product: the same number, no [n, m] temporary.
        picked = jnp.take_along_axis(logp, t[:, None].astype(jnp.int32), axis=-1)
        return -jnp.sum(picked) / _n(z)
    return -jnp.sum(t * logp) / _n(z)


def _cross_entropy_dlogits(z, y, t):
    T = _targets(t, z.shape[-1]).astype(y.dtype)
    # d/dz of -sum_k t_k log p_k = p * sum_k t_k - t; equals p - t for rows summing to 1.
    return (y * jnp.sum(T, axis=-1, keepdims=True) - T) / _n(z)


def _cross_entropy_dtargets(z, y, t):
    del y
    return -jax.nn.log_softmax(z, axis=-1) / _n(z)


def _bce_value(z, y, t):
    del y
    return jnp.sum(jnp.logaddexp(z, 0) - t * z) / _n(z)


def get(loss: str, out: OutputActivation) -> LossFns:
    """Returns the loss functions for a (loss, output activation) pair.

    Args:
      loss: ``mse``, ``cross_entropy`` or ``binary_cross_entropy``.
      out: the network's output activation.

    Raises:
      ValueError: unknown loss name, or a pair that makes no sense (e.g.
        cross_entropy after sigmoid); the message lists what is allowed.
    """
    _checks.choice("loss", loss, PAIRS)
    if out.name not in PAIRS[loss]:
        fits = [f"{o!r}" for o in PAIRS[loss]]
        raise ValueError(
            f"loss={loss!r} does not fit output={out.name!r}: {loss} needs output in "
            f"[{', '.join(fits)}]. Allowed (output, loss) pairs: "
            + ", ".join(f"({o}, {l})" for l, os in PAIRS.items() for o in os)
            + "."
        )
    if loss == "mse":
        return _mse(out)
    if loss == "cross_entropy":
        return LossFns(loss, _cross_entropy_value, _cross_entropy_dlogits, _cross_entropy_dtargets)
    return LossFns(
        loss,
        _bce_value,
        lambda z, y, t: (y - t) / _n(z),
        lambda z, y, t: -z / _n(z),
    )


def l2_penalty(params, l2: float, n: int) -> Array:
    """lambda/(2n) * sum of all squared weights; biases are not regularised."""
    return l2 / (2 * n) * sum(jnp.sum(p["W"] ** 2) for p in params)
