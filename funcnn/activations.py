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
Optional, for curvature: ``jvp(z, y, dz)`` and ``rvjp(z, y, dy, rz, rdy)``,
the tangent of ``vjp`` (its R-operator); an ``Activation``'s ``grad2``.

Convention at kinks: the derivative at a kink takes the value of the branch
for ``z <= 0``. So relu'(0) = 0 (as in the reference material: a unit whose
pre-activation is <= 0 passes no gradient) and leaky_relu'(0) = slope.

Each value carries what it means, so no module compares names:

* ``Activation.smooth``: True when ``fn`` has no kinks, so finite differences
  need no kink detection (``funcnn.gradcheck``). A user's activation defaults
  to False: the check then looks for kinks, which costs time, never truth.
* ``OutputActivation.decide``: what an output means as a prediction, ``y ->
  labels``: argmax for softmax (``[n]`` int32), every output thresholded at 0.5
  for sigmoid (``[n, m]`` int32), None for identity (the outputs are the
  prediction: regression). ``accuracy`` below is defined from it, once.

Users' own activations are values of these types, accepted wherever a name is
(``funcnn.mlp(..., hidden=Activation("softsign", fn, grad))``). Their names
are what checkpoints record, so a user's value may not reuse a built-in name.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnn import _checks
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.typing import Array

LEAKY_SLOPE = 0.01  # leaky_relu's slope for z <= 0 (the usual default).
ELU_ALPHA = 1.0  # elu's saturation value is -alpha.
_GELU_C = math.sqrt(2.0 / math.pi)  # gelu tanh approximation (Hendrycks & Gimpel 2016).
_GELU_K = 0.044715


class Activation(NamedTuple):
    """An elementwise activation and its hand-derived derivative.

    ``grad(z, y)`` receives the pre-activation ``z`` and the activation's own
    output ``y = fn(z)`` (same shape, same dtype) and returns ``dy/dz``
    elementwise; it may use either. ``grad2(z, y)``, the second derivative,
    is optional: only ``net.hvp`` needs it (a clear error names an activation
    without one). A piecewise-linear activation gives ``zero_grad2``.
    """

    name: str
    fn: Callable[[Array], Array]  # z -> y, elementwise
    grad: Callable[[Array, Array], Array]  # (z, y) -> dy/dz, elementwise
    grad2: Callable[[Array, Array], Array] | None = None  # (z, y) -> d2y/dz2; optional
    smooth: bool = False  # no kinks: finite differences need no kink detection


class OutputActivation(NamedTuple):
    """An output activation over the last axis and its vector-Jacobian product.

    ``decide(y)`` turns outputs into predictions (labels); None means the
    outputs themselves are the prediction (regression).
    """

    name: str
    fn: Callable[[Array], Array]  # z [batch, m] -> y [batch, m]
    vjp: Callable[[Array, Array, Array], Array]  # (z, y, dy) -> dz
    decide: Callable[[Array], Array] | None = None  # y -> predictions; None: y is the prediction
    smooth: bool = False  # no kinks: finite differences need no kink detection
    jvp: Callable[[Array, Array, Array], Array] | None = None  # (z, y, dz) -> dy; None: no forward mode
    # (z, y, dy, rz, rdy) -> R{vjp(z, y, dy)}: the tangent of the VJP when z moves
    # by rz and dy by rdy (net.hvp for losses of the output, e.g. mse); None: none.
    rvjp: Callable[..., Array] | None = None


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


def _gelu_grad2(z, y):
    del y
    # With u = C (z + K z^3), s = sigmoid(2u), q = ds/dz = 2 s (1 - s) u':
    # gelu' = s + z q, so gelu'' = 2 q + z dq/dz, where
    # dq/dz = 2 q (1 - 2s) u' + 2 s (1 - s) u''  and  u'' = 6 C K z.
    s = jax.nn.sigmoid(2 * _GELU_C * (z + _GELU_K * z**3))
    du = _GELU_C * (1 + 3 * _GELU_K * z * z)
    q = 2 * s * (1 - s) * du
    return 2 * q + z * (2 * q * (1 - 2 * s) * du + 12 * _GELU_C * _GELU_K * z * s * (1 - s))


def _swish(z):
    return z * jax.nn.sigmoid(z)


def _swish_grad(z, y):
    # d/dz [z s(z)] = s + z s (1 - s) = y + s (1 - y).
    s = jax.nn.sigmoid(z)
    return y + s * (1 - y)


def _swish_grad2(z, y):
    # d/dz [s + z s (1 - s)] = s (1 - s) (2 + z (1 - 2s)).
    del y
    s = jax.nn.sigmoid(z)
    return s * (1 - s) * (2 + z * (1 - 2 * s))


def zero_grad2(z, y):
    """The second derivative of a piecewise-linear activation (identity, relu, leaky_relu): 0.

    The curvature rules test ``act.grad2 is zero_grad2`` and drop the term it
    multiplies, as JAX's forward mode does for piecewise-linear functions
    (multiplying by an array of zeros would keep the cotangent that feeds it
    alive: a whole matmul per layer). Any other function returning zeros is
    as correct, only slower.
    """
    del y
    return jnp.zeros_like(z)


_HIDDEN = (
    Activation("identity", lambda z: z, lambda z, y: jnp.ones_like(z), zero_grad2, smooth=True),
    # relu'' = leaky_relu'' = 0 away from the kink; at the kink (where the second
    # derivative is a Dirac delta) funcnn takes 0 too, the z <= 0 branch's value.
    Activation("relu", _relu, lambda z, y: (z > 0).astype(z.dtype), zero_grad2),
    Activation("leaky_relu", _leaky_relu, lambda z, y: jnp.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype),
               zero_grad2),
    # sigmoid'' = d/dz y (1 - y) = y (1 - y) (1 - 2y).
    Activation("sigmoid", jax.nn.sigmoid, lambda z, y: y * (1 - y), lambda z, y: y * (1 - y) * (1 - 2 * y),
               smooth=True),
    # tanh'' = d/dz (1 - y^2) = -2 y (1 - y^2).
    Activation("tanh", jnp.tanh, lambda z, y: 1 - y * y, lambda z, y: -2 * y * (1 - y * y), smooth=True),
    # softplus(z) = log(1 + e^z), written stably; its derivative is sigmoid(z),
    # its second derivative sigmoid(z) (1 - sigmoid(z)).
    Activation("softplus", lambda z: jnp.logaddexp(z, 0), lambda z, y: jax.nn.sigmoid(z),
               lambda z, y: jax.nn.sigmoid(z) * (1 - jax.nn.sigmoid(z)), smooth=True),
    # elu' = 1 for z > 0, alpha e^z = y + alpha otherwise. Continuous at 0 but
    # its second derivative jumps (0 vs alpha): finite differences see a kink.
    # elu'' = 0 for z > 0, alpha e^z = y + alpha otherwise (the z <= 0 branch at 0).
    Activation("elu", _elu, lambda z, y: jnp.where(z > 0, 1.0, y + ELU_ALPHA).astype(z.dtype),
               lambda z, y: jnp.where(z > 0, 0.0, y + ELU_ALPHA).astype(z.dtype)),
    Activation("gelu", _gelu, _gelu_grad, _gelu_grad2, smooth=True),
    Activation("swish", _swish, _swish_grad, _swish_grad2, smooth=True),
)
HIDDEN = {a.name: a for a in _HIDDEN}
HIDDEN["linear"] = HIDDEN["identity"]._replace(name="linear")
HIDDEN["silu"] = HIDDEN["swish"]._replace(name="silu")


def _softmax_vjp(z, y, dy):
    del z
    # J = diag(y) - y y^T per row, so J^T dy = y * (dy - <dy, y>): O(m), not O(m^2).
    return y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))


def _argmax(y):
    return jnp.argmax(y, axis=-1).astype(jnp.int32)


def _threshold(y):
    return (y > 0.5).astype(jnp.int32)


def _sigmoid_rvjp(z, y, dy, rz, rdy):
    # vjp = dy * y (1 - y); ry = y (1 - y) rz, d/dy [y (1 - y)] = 1 - 2y.
    s1 = y * (1 - y)
    return rdy * s1 + dy * (1 - 2 * y) * s1 * rz


def _softmax_rvjp(z, y, dy, rz, rdy):
    # vjp = y * (dy - <dy, y>); with ry = y * (rz - <rz, y>) (the JVP), the product
    # rule gives ry * (dy - <dy, y>) + y * (rdy - <rdy, y> - <dy, ry>).
    ry = _softmax_vjp(z, y, rz)
    return (ry * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))
            + y * (rdy - jnp.sum(rdy * y + dy * ry, axis=-1, keepdims=True)))


# Forward mode: every built-in output's Jacobian is symmetric (identity,
# diag(y (1 - y)), diag(y) - y y^T per row), so its JVP is its VJP.
OUTPUT = {
    "identity": OutputActivation("identity", lambda z: z, lambda z, y, dy: dy, smooth=True,
                                 jvp=lambda z, y, dz: dz, rvjp=lambda z, y, dy, rz, rdy: rdy),
    "sigmoid": OutputActivation("sigmoid", jax.nn.sigmoid, lambda z, y, dy: dy * y * (1 - y), _threshold,
                                smooth=True, jvp=lambda z, y, dz: dz * y * (1 - y), rvjp=_sigmoid_rvjp),
    "softmax": OutputActivation("softmax", lambda z: jax.nn.softmax(z, axis=-1), _softmax_vjp, _argmax,
                                smooth=True, jvp=_softmax_vjp, rvjp=_softmax_rvjp),
}


def hidden(a, *, custom=()) -> Activation:
    """The hidden activation a name or value stands for.

    Args:
      a: a name, one of ``identity`` (alias ``linear``), ``relu``,
        ``leaky_relu``, ``sigmoid``, ``tanh``, ``softplus``, ``elu``,
        ``gelu``, ``swish`` (alias ``silu``); or an ``Activation`` value.
      custom: users' ``Activation`` values that names may also refer to
        (what ``checkpoint.load(..., custom=)`` passes).

    Returns:
      The ``Activation``.

    Raises:
      ValueError: an unknown name (the message lists the allowed names), or
        a user's value that reuses a built-in name.
      TypeError: an ``Activation`` whose fields are not a name and functions.
    """
    return _resolve("hidden", a, HIDDEN, Activation, custom, ("fn", "grad"))


def output(o, *, custom=()) -> OutputActivation:
    """The output activation a name (``identity``, ``sigmoid``, ``softmax``) or value stands for.

    Raises:
      ValueError: an unknown name (the message lists the allowed names), or a
        user's value that reuses a built-in name.
      TypeError: an ``OutputActivation`` whose fields are not a name and functions.
    """
    return _resolve("output", o, OUTPUT, OutputActivation, custom, ("fn", "vjp"))


def _resolve(kind: str, a, table: dict, cls, custom, functions: tuple[str, ...]):
    """Looks ``a`` up in ``table`` and ``custom``, or checks the value ``a`` itself."""
    if isinstance(a, cls):
        check_piece(kind, a, table, functions)
        return a
    users = {c.name: c for c in custom if isinstance(c, cls)}
    if isinstance(a, str) and a in users and a not in table:
        return users[a]
    return table[_checks.choice(kind, a, [*table, *users])]


def check_piece(kind: str, piece, table: dict, functions: tuple[str, ...]) -> None:
    """A user's piece: a string name that no built-in has, and callables where functions go."""
    if not isinstance(piece.name, str) or not piece.name:
        raise InvalidType(f"{kind}: a {type(piece).__name__}'s name must be a non-empty string; "
                        f"got {piece.name!r}.")
    for f in functions:
        if not callable(getattr(piece, f)):
            raise InvalidType(f"{kind} {piece.name!r}: {f} must be a function; got {getattr(piece, f)!r}.")
    if piece.name in table and table[piece.name] != piece:
        raise InvalidArgument(f"{kind} {piece.name!r}: that name is funcnn's built-in {kind}; give your "
                         "own piece another name (checkpoints record pieces by name).")


def accuracy(out: OutputActivation, y: Array, t: Array) -> Array:
    """Exact-match accuracy of outputs ``y`` against targets ``t``: the one definition funcnn uses.

    A sample counts as right when every decision of it is right:
    ``mean_i all_k decide(y)_ik == truth_ik``, where ``truth`` is ``t`` itself
    for integer labels and ``decide(t)`` for target rows (argmax of one-hot or
    soft rows after softmax; each target thresholded at 0.5 after sigmoid).
    For softmax and for a single sigmoid output this is the usual accuracy;
    for several sigmoid outputs (multi-label) it is the subset accuracy
    (scikit-learn's ``accuracy_score`` on multi-label data), not the mean over
    entries.

    Args:
      out: an output activation with a ``decide`` (not identity).
      y: outputs ``[n, m]``.
      t: integer labels ``[n]`` or target rows ``[n, m]``.

    Returns:
      A scalar in [0, 1], in ``y``'s dtype.

    Raises:
      ValueError: ``out`` has no ``decide`` (a regression output has no accuracy).
    """
    if out.decide is None:
        raise InvalidArgument(f"output {out.name!r} makes no decisions (regression): it has no accuracy.")
    pred = out.decide(y)
    truth = t if jnp.issubdtype(t.dtype, jnp.integer) else out.decide(t)
    right = pred == truth.astype(pred.dtype)
    return jnp.mean(jnp.all(right, axis=-1) if right.ndim > 1 else right).astype(y.dtype)
