"""Weight initializers: ``Initializer(name, epsilon)`` values, hashable and saveable.

Every initializer draws a weight matrix ``W: [fan_in, fan_out]`` from an explicit
``jax.random`` key; the same key gives the same weights. Biases are zeros unless
the network is built with ``bias_init="same"``, which draws them from the same
distribution (the classic course initialises its bias column that way).

=================  ==========================================  ===================
name               distribution                                reference
=================  ==========================================  ===================
xavier_normal      N(0, 2 / (fan_in + fan_out))                Glorot & Bengio 2010
xavier_uniform     U(-a, a), a = sqrt(6 / (fan_in + fan_out))  Glorot & Bengio 2010
he_normal          N(0, 2 / fan_in)                            He et al. 2015
lecun_normal       N(0, 1 / fan_in)                            LeCun et al. 1998
uniform            U(-epsilon, epsilon), epsilon = 0.12        the classic
                                                               symmetry-breaking init
=================  ==========================================  ===================

The normals are plain (not truncated) so the stated std is the actual std.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks
from funcnn.errors import InvalidArgument

NAMES = ("xavier_normal", "xavier_uniform", "he_normal", "lecun_normal", "uniform")
DEFAULT_EPSILON = 0.12


class Initializer(NamedTuple):
    """A named weight distribution; ``epsilon`` is used by ``uniform`` only."""

    name: str
    epsilon: float | None = None


def uniform(epsilon: float = DEFAULT_EPSILON) -> Initializer:
    """U(-epsilon, epsilon), the classic symmetric-break init (epsilon > 0)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.integer, np.floating)) \
            or not 0 < epsilon < math.inf:
        raise InvalidArgument(f"epsilon must be a positive finite number; got {epsilon!r}.")
    return Initializer("uniform", float(epsilon))


def get(init) -> Initializer:
    """Normalises a name or an ``Initializer`` into an ``Initializer``.

    Args:
      init: one of ``xavier_normal``, ``xavier_uniform``, ``he_normal``,
        ``lecun_normal``, ``uniform`` (epsilon 0.12), or an ``Initializer``
        such as ``uniform(0.05)``.

    Raises:
      ValueError: unknown name (the message lists the allowed names).
    """
    if isinstance(init, Initializer):
        _checks.choice("init", init.name, NAMES)
        if init.name != "uniform":
            return init
        return uniform(DEFAULT_EPSILON if init.epsilon is None else init.epsilon)
    _checks.choice("init", init, NAMES)
    return uniform() if init == "uniform" else Initializer(init)


def scale(init: Initializer, fan_in: int, fan_out: int) -> tuple[str, float]:
    """``("normal", std)`` or ``("uniform", a)`` (meaning U(-a, a)) for a layer ``fan_in -> fan_out``."""
    name = init.name
    if name == "uniform":  # Initializer("uniform") without epsilon means the default, as get() says
        return "uniform", DEFAULT_EPSILON if init.epsilon is None else float(init.epsilon)
    if name == "xavier_uniform":
        return "uniform", math.sqrt(6.0 / (fan_in + fan_out))
    return "normal", {
        "xavier_normal": math.sqrt(2.0 / (fan_in + fan_out)),
        "he_normal": math.sqrt(2.0 / fan_in),
        "lecun_normal": math.sqrt(1.0 / fan_in),
    }[name]


def standard(kind: str, key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Unit draws of ``kind``: N(0, 1) for "normal", U(-1, 1) for "uniform"."""
    if kind == "uniform":
        return jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)
    return jax.random.normal(key, shape, dtype)


def sample(init: Initializer, key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int,
           dtype=jnp.float32) -> jax.Array:
    """Draws an array of ``shape`` from ``init`` for a layer ``fan_in -> fan_out``."""
    kind, s = scale(init, fan_in, fan_out)
    return s * standard(kind, key, shape, dtype)
