"""funcnn: a functional MLP library on JAX with hand-derived backprop.

Public API (one obvious place for each thing)::

    funcnn.mlp(sizes, ...) -> MLP          the network as pure functions
    funcnn.gradcheck(net, params, x, y)    hand-derived vs reverse/forward/finite differences
    funcnn.activations, funcnn.losses, funcnn.initializers
"""
from funcnn import activations, gradcheck, initializers, losses
from funcnn.gradcheck import GradcheckReport
from funcnn.mlp import MLP, Cache, MLPSpec, count_params, from_spec, mlp, spec_from_dict, with_manual_vjp

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "MLPSpec",
    "Cache",
    "GradcheckReport",
    "activations",
    "count_params",
    "from_spec",
    "gradcheck",
    "initializers",
    "losses",
    "mlp",
    "spec_from_dict",
    "with_manual_vjp",
]
