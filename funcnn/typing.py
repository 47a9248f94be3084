"""The types funcnn's contracts are written in, defined once and imported everywhere.

``Array`` is ``jax.Array``. ``Params`` is a pytree of floating-point arrays:
for a network, a list with one entry per layer (a dense layer's is
``{"W": [fan_in, fan_out], "b": [fan_out]}``; a layer without parameters has
``{}``). Gradients, optimizer updates and tangent vectors have the structure,
shapes and dtypes of the params they belong to. ``OptState`` is an
optimizer's state: a NamedTuple, or a tuple of them for ``chain``, whose
leaves are arrays only. ``PRNGKey`` is a key from ``jax.random.key``.
"""
from __future__ import annotations

from typing import Any

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a pytree of float arrays; for a network list[dict[str, Array] | ...], one entry per layer
Updates = Params  # the structure, shapes and dtypes of the params they update
OptState = Any  # a NamedTuple, or a tuple of them, with array leaves

__all__ = ["Array", "OptState", "PRNGKey", "Params", "Updates"]
