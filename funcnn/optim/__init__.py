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
``step -> lr`` (see ``funcnn.optim.schedules``, re-exported here). A schedule is
evaluated at the number of updates done before this one: 0 on the first.

Layout (optax's): ``base`` (the contract, ``chain``, ``apply_updates``),
``transforms`` (the ``scale_by_*`` rules and their states), ``aliases`` (the
named optimizers), ``schedules``, and the full-batch minimisers ``lbfgs``
(``lbfgs_minimize``) and ``newton`` (``hessian_free``, truncated Newton).
Everything public is importable from ``funcnn.optim``; the old module paths
``funcnn.schedules``, ``funcnn.lbfgs`` and ``funcnn.hessian_free`` still work.
"""
from __future__ import annotations

from funcnn.optim.aliases import adagrad, adam, adamw, momentum, nesterov, rmsprop, sgd
from funcnn.optim.base import (
    EmptyState,
    GradientTransformation,
    TransformInitFn,
    TransformUpdateFn,
    apply_updates,
    chain,
    global_norm,
)
from funcnn.optim.lbfgs import LBFGSResult, lbfgs_minimize
from funcnn.optim.newton import HessianFreeResult, hessian_free
from funcnn.optim.schedules import (
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
from funcnn.optim.transforms import (
    ScalarOrSchedule,
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByScheduleState,
    TraceState,
    add_decayed_weights,
    clip_by_global_norm,
    scale,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_schedule,
    trace,
)

__all__ = [
    # Base API.
    "GradientTransformation",
    "TransformInitFn",
    "TransformUpdateFn",
    "ScalarOrSchedule",
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
    # Schedules (funcnn.optim.schedules; a test checks this list against its __all__).
    "Schedule",
    "constant_schedule",
    "cosine_decay",
    "cosine_decay_schedule",
    "exponential_decay",
    "piecewise_constant_schedule",
    "step_decay_schedule",
    "warmup_cosine_decay",
    "warmup_cosine_decay_schedule",
    # L-BFGS (funcnn.optim.lbfgs).
    "LBFGSResult",
    "lbfgs_minimize",
    # Hessian-free (funcnn.optim.newton).
    "HessianFreeResult",
    "hessian_free",
]
