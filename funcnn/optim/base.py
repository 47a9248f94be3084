"""The optimizer contract: ``GradientTransformation``, ``chain`` and ``apply_updates`` (optax's ``base``).

A ``GradientTransformation`` is a pair of pure functions::

    state = init(params)
    updates, state = update(grads, state, params=None)

``params``, ``grads`` and ``updates`` are pytrees of the same structure;
``state`` is a NamedTuple (or a tuple of them, for ``chain``) whose leaves are
arrays only. See ``funcnn.optim`` for the whole contract.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp

from funcnn import _checks
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.typing import Array, OptState, Params, Updates


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
