"""Activations, each written once beside its hand-derived derivative.

Contract (stated once, as in stax): a hidden activation is an
``Activation(name, fn, grad)`` where

    y = fn(z)                 elementwise, any shape
    dy/dz = grad(z, y)        elementwise, same shape; ``y`` is ``fn(z)``, passed
                              in so a derivative can reuse the forward output
                              where that is cheaper (sigmoid' = y (1 - y)).

An output activation is an ``OutputActivation(name, fn, vjp)`` acting on the
last axis of ``z: [batch, m]``; ``vjp(z, y, dy) -> dz`` is its vector-Jacobian
product, so softmax never materialises its ``[batch, m, m]`` Jacobian.

Convention at kinks: the derivative at a kink takes the value of the branch
for ``z <= 0``. So relu'(0) = 0 (as in the reference material: a unit whose
pre-activation is <= 0 passes no gradient) and leaky_relu'(0) = slope.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from funcnn import _checks

Array = jax.Array

LEAKY_SLOPE = 0.01  # leaky_relu's slope for z <= 0 (the usual default).
ELU_ALPHA = 1.0  # elu's saturation value is -alpha.
_GELU_C = math.sqrt(2.0 / math.pi)  # gelu tanh approximation (Hendrycks & Gimpel 2016).
_GELU_K = 0.044715


class Activation(NamedTuple):
    """An elementwise activation and its hand-derived derivative."""

    name: str
    fn: Callable[[Array], Array]  # z -> y
    grad: Callable[[Array, Array], Array]  # (z, y) -> dy/dz


class OutputActivation(NamedTuple):
    """An output activation over the last axis and its vector-Jacobian product."""

    name: str
    fn: Callable[[Array], Array]  # z [batch, m] -> y [batch, m]
    vjp: Callable[[Array, Array, Array], Array]  # (z, y, dy) -> dz


def _relu(z):
    # maximum, not where(z > 0, z, 0): a NaN must propagate, not become 0.
    return jnp.maximum(z, jnp.zeros_like(z))


def _leaky_relu(z):
    return jnp.where(z > 0, z, LEAKY_SLOPE * z)


def _elu(z):
    # expm1 of min(z, 0): the unused branch never overflows for large z.
    return jnp.where(z > 0, z, ELU_ALPHA * jnp.expm1(jnp.minimum(z, 0)))


def _gelu(z):
    return 0.5 * z * (1 + jnp.tanh(_GELU_C * (z + _GELU_K * z**3)))


def _gelu_grad(z, y):
    del y  # the derivative needs tanh(u), which y alone does not give back.
    # 0.5 (1 + tanh u) = sigmoid(2u) and 0.5 (1 - tanh^2 u) = 2 s (1 - s): the same
    # maths without the cancellation of 1 + tanh(u) for very negative z.
    s = jax.nn.sigmoid(2 * _GELU_C * (z + _GELU_K * z**3))
    return s + 2 * z * s * (1 - s) * _GELU_C * (1 + 3 * _GELU_K * z * z)


def _swish(z):
    return z * jax.nn.sigmoid(z)


def _swish_grad(z, y):
    # d/dz [z s(z)] = s + z s (1 - s) = y + s (1 - y).
    s = jax.nn.sigmoid(z)
    return y + s * (1 - y)


_HIDDEN = (
    Activation("identity", lambda z: z, lambda z, y: jnp.ones_like(z)),
    Activation("relu", _relu, lambda z, y: (z > 0).astype(z.dtype)),
    Activation("leaky_relu", _leaky_relu, lambda z, y: jnp.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype)),
    Activation("sigmoid", jax.nn.sigmoid, lambda z, y: y * (1 - y)),
    Activation("tanh", jnp.tanh, lambda z, y: 1 - y * y),
    # softplus(z) = log(1 + e^z), written stably; its derivative is sigmoid(z).
    Activation("softplus", lambda z: jnp.logaddexp(z, 0), lambda z, y: jax.nn.sigmoid(z)),
    # elu' = 1 for z > 0, alpha e^z = y + alpha otherwise.
    Activation("elu", _elu, lambda z, y: jnp.where(z > 0, 1.0, y + ELU_ALPHA).astype(z.dtype)),
    Activation("gelu", _gelu, _gelu_grad),
    Activation("swish", _swish, _swish_grad),
)
HIDDEN = {a.name: a for a in _HIDDEN}
HIDDEN["linear"] = HIDDEN["identity"]._replace(name="linear")
HIDDEN["silu"] = HIDDEN["swish"]._replace(name="silu")


def _softmax_vjp(z, y, dy):
    del z
    # J = diag(y) - y y^T per row, so J^T dy = y * (dy - <dy, y>): O(m), not O(m^2).
    return y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))


OUTPUT = {
    "identity": OutputActivation("identity", lambda z: z, lambda z, y, dy: dy),
    "sigmoid": OutputActivation("sigmoid", jax.nn.sigmoid, lambda z, y, dy: dy * y * (1 - y)),
    "softmax": OutputActivation("softmax", lambda z: jax.nn.softmax(z, axis=-1), _softmax_vjp),
}


def hidden(name: str) -> Activation:
    """Looks up a hidden activation by name.

    Args:
      name: one of ``identity`` (alias ``linear``), ``relu``, ``leaky_relu``,
        ``sigmoid``, ``tanh``, ``softplus``, ``elu``, ``gelu``, ``swish``
        (alias ``silu``).

    Returns:
      The ``Activation``.

    Raises:
      ValueError: unknown name (the message lists the allowed names).
    """
    return HIDDEN[_checks.choice("hidden", name, HIDDEN)]


def output(name: str) -> OutputActivation:
    """Looks up an output activation: ``identity``, ``sigmoid`` or ``softmax``.

    Raises:
      ValueError: unknown name (the message lists the allowed names).
    """
    return OUTPUT[_checks.choice("output", name, OUTPUT)]
