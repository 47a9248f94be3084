"""Losses over a batch, computed stably from the logits, with their hand-derived gradients.

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

Contract (stated once): a loss is a ``Loss`` value. ``value(z, y, t)`` is the
mean loss over the batch from the logits ``z`` and the outputs ``y = out(z)``;
``grad(z, y, t)`` is its hand-derived gradient, either with respect to the
output ``y`` (``wrt="output"``: funcnn pushes it through the output
activation's vector-Jacobian product) or with respect to the logits directly
(``wrt="logits"``: a fused shortcut, valid only after the outputs listed in
``outputs``). ``dtargets`` is the gradient with respect to float targets
(optional: without it the targets are not differentiable). ``hess(z, y, t, d)``
is the Hessian of ``value`` with respect to what ``wrt`` names, applied to ``d``
(optional: only ``net.gnvp`` and ``hessian_free`` need it). ``LOSSES`` is the
one table of built-in losses; which outputs each one fits lives on the value.

The fused shortcuts: softmax + cross_entropy gives (p * sum_k t_k - t)/n, which
is (p - t)/n for one-hot rows; sigmoid + binary_cross_entropy gives (s - t)/n.
mse's dL/dy = (y - t)/n goes through the output's VJP.
"""
from __future__ import annotations

import types
from collections.abc import Callable
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp

from funcnn import _checks, activations
from funcnn.activations import OutputActivation
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.typing import Array

LossFn = Callable[[Array, Array, Array], Array]  # (z, y, t) -> ...
WRT = ("output", "logits")


class Loss(NamedTuple):
    """A loss and its hand-derived gradient; see the module docstring.

    Example, a user's mean absolute error (gradient with respect to the output)::

        mae = Loss("mae", lambda z, y, t: jnp.sum(jnp.abs(y - t)) / z.shape[0],
                   lambda z, y, t: jnp.sign(y - t) / z.shape[0],
                   dtargets=lambda z, y, t: -jnp.sign(y - t) / z.shape[0])
        net = funcnn.mlp([3, 8, 1], output="identity", loss=mae)
    """

    name: str
    value: LossFn  # (z, y, t) -> scalar, the mean over the batch
    grad: LossFn  # (z, y, t) -> dL/dy [n, m] (wrt="output") or dL/dz [n, m] (wrt="logits")
    wrt: str = "output"  # what grad differentiates by: "output" or "logits"
    dtargets: LossFn | None = None  # (z, y, t) -> dL/dt for float targets; None: not differentiable
    outputs: tuple[str, ...] | None = None  # names of the output activations it fits; None: any
    labels: bool = False  # also takes integer class labels [n] as t
    smooth: bool = False  # no kinks in z or t: finite differences need no kink detection
    # (z, y, t, d) -> H d: the Hessian of ``value`` with respect to what ``wrt``
    # names (y or z), applied to d [n, m] without forming it; None: no curvature.
    hess: Callable[[Array, Array, Array, Array], Array] | None = None


class LossFns(NamedTuple):
    """A (loss, output) pair resolved: its value and its gradients with respect to the logits."""

    name: str
    value: LossFn  # (z, y, t) -> scalar mean loss
    dlogits: LossFn  # (z, y, t) -> dL/dz [n, m]
    dtargets: LossFn | None  # (z, y, t) -> dL/dt (float t only); None if the loss has none
    loss: Loss | None = None  # the Loss value it came from


def _n(z):
    return z.shape[0]


def _targets(t: Array, m: int, dtype) -> Array:
    """Integer labels [n] -> one-hot rows [n, m] in the float dtype; rows pass through."""
    if jnp.issubdtype(t.dtype, jnp.integer):
        return jax.nn.one_hot(t, m, dtype=dtype)
    return t.astype(dtype)


def _mse_value(z, y, t):
    return jnp.sum((y - t) ** 2) / (2 * _n(z))


def _cross_entropy_value(z, y, t):
    del y
    logp = jax.nn.log_softmax(z, axis=-1)
    if jnp.issubdtype(t.dtype, jnp.integer):
        # Gather instead of a one-hot product: the same number, no [n, m] temporary.
        picked = jnp.take_along_axis(logp, t[:, None].astype(jnp.int32), axis=-1)
        return -jnp.sum(picked) / _n(z)
    return -jnp.sum(t * logp) / _n(z)


def _cross_entropy_dlogits(z, y, t):
    T = _targets(t, z.shape[-1], y.dtype)
    # d/dz of -sum_k t_k log p_k = p * sum_k t_k - t; equals p - t for rows summing to 1.
    return (y * jnp.sum(T, axis=-1, keepdims=True) - T) / _n(z)


def _cross_entropy_hess(z, y, t, d):
    # The JVP of (p s - T)/n, s = sum_k T_k: dp s / n with dp = p (d - <p, d>),
    # i.e. s (diag(p) - p p^T) d / n per row, never the [m, m] matrix. PSD for s >= 0.
    T = _targets(t, z.shape[-1], y.dtype)
    return y * (d - jnp.sum(y * d, axis=-1, keepdims=True)) * jnp.sum(T, axis=-1, keepdims=True) / _n(z)


def _bce_value(z, y, t):
    del y
    return jnp.sum(jnp.logaddexp(z, 0) - t * z) / _n(z)


LOSSES = {
    "mse": Loss("mse", _mse_value, lambda z, y, t: (y - t) / _n(z),
                dtargets=lambda z, y, t: (t - y) / _n(z), smooth=True,
                hess=lambda z, y, t, d: d / _n(z)),  # d2L/dy2 = I/n
    "cross_entropy": Loss("cross_entropy", _cross_entropy_value, _cross_entropy_dlogits, wrt="logits",
                          dtargets=lambda z, y, t: -jax.nn.log_softmax(z, axis=-1) / _n(z),
                          outputs=("softmax",), labels=True, smooth=True, hess=_cross_entropy_hess),
    "binary_cross_entropy": Loss("binary_cross_entropy", _bce_value, lambda z, y, t: (y - t) / _n(z),
                                 wrt="logits", dtargets=lambda z, y, t: -z / _n(z), outputs=("sigmoid",),
                                 smooth=True,
                                 hess=lambda z, y, t, d: d * y * (1 - y) / _n(z)),  # d2L/dz2 = diag(s(1-s))/n
}

# loss name -> output activations it may follow (derived from LOSSES; read-only).
# Categorical cross-entropy needs a distribution (softmax); the logistic cost
# needs per-output probabilities (sigmoid). Squared error fits any output.
PAIRS = types.MappingProxyType({
    name: loss.outputs if loss.outputs is not None else tuple(activations.OUTPUT)
    for name, loss in LOSSES.items()})


def resolve(loss, *, custom=()) -> Loss:
    """The ``Loss`` a name (``mse``, ``cross_entropy``, ``binary_cross_entropy``) or value stands for.

    Args:
      loss: a name or a ``Loss`` value.
      custom: users' ``Loss`` values that names may also refer to.

    Raises:
      ValueError: an unknown name (the message lists the allowed names), a
        user's value that reuses a built-in name, or ``wrt`` not in
        ``("output", "logits")``.
      TypeError: a ``Loss`` whose fields are not a name and functions.
    """
    if isinstance(loss, Loss):
        activations.check_piece("loss", loss, LOSSES, ("value", "grad"))
        _checks.choice(f"loss {loss.name!r}: wrt", loss.wrt, WRT)
        if loss.dtargets is not None and not callable(loss.dtargets):
            raise InvalidType(f"loss {loss.name!r}: dtargets must be a function or None; got {loss.dtargets!r}.")
        return loss
    users = {c.name: c for c in custom if isinstance(c, Loss)}
    if isinstance(loss, str) and loss in users and loss not in LOSSES:
        return users[loss]
    return LOSSES[_checks.choice("loss", loss, [*LOSSES, *users])]


def get(loss, out: OutputActivation, *, custom=()) -> LossFns:
    """Returns the loss functions for a (loss, output activation) pair.

    Args:
      loss: a name (``mse``, ``cross_entropy``, ``binary_cross_entropy``) or a
        ``Loss`` value.
      out: the network's output activation.
      custom: users' ``Loss`` values that a name may refer to.

    Returns:
      ``LossFns`` whose ``dlogits`` is the loss's own gradient (``wrt="logits"``)
      or its gradient with respect to the output pushed through ``out.vjp``.

    Raises:
      ValueError: unknown loss name, or a pair that makes no sense (e.g.
        cross_entropy after sigmoid); the message lists what is allowed.
    """
    lv = resolve(loss, custom=custom)
    if lv.outputs is not None and out.name not in lv.outputs:
        fits = [f"{o!r}" for o in lv.outputs]
        raise InvalidArgument(
            f"loss={lv.name!r} does not fit output={out.name!r}: {lv.name} needs output in "
            f"[{', '.join(fits)}]. Allowed (output, loss) pairs: "
            + ", ".join(f"({o}, {name})" for name, os in PAIRS.items() for o in os)
            + "."
        )
    if lv.wrt == "logits":
        dlogits = lv.grad
    else:
        def dlogits(z, y, t):
            return out.vjp(z, y, lv.grad(z, y, t))
    return LossFns(lv.name, lv.value, dlogits, lv.dtargets, lv)


def weights(params) -> list:
    """Every leaf named ``"W"`` in a parameter pytree, in tree order: what L2 penalises."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [leaf for path, leaf in flat if _is_weight(path)]


def _is_weight(path) -> bool:
    return bool(path) and isinstance(path[-1], jax.tree_util.DictKey) and path[-1].key == "W"


def add_l2_grad(grads, params, coef):
    """``grads`` with ``coef * W`` added to every ``"W"`` leaf (the L2 term's gradient)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, g, p: g + coef * p if _is_weight(path) else g, grads, params)


def l2_penalty(params, l2: float, n: int) -> Array:
    """lambda/(2n) * sum of all squared weights (every leaf named ``"W"``); biases, gains are not."""
    # A Python 0.0 when there are no weights (weakly typed: it never changes the loss's dtype).
    return cast(Array, l2 / (2 * n) * sum(jnp.sum(w ** 2) for w in weights(params)))
