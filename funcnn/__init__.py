"""funcnn: a functional neural-network library on JAX with hand-derived backprop.

Public API (one obvious place for each thing)::

    funcnn.mlp(sizes, ...) -> Network      the MLP as pure functions (funcnn.mlp module: MLPSpec)
    funcnn.network(layers, ...) -> Network any layers composed, with an output and a loss
    funcnn.layers                          dense, activation, dropout, layer_norm, residual; the Layer contract
    funcnn.gradcheck(net, params, x, y)    hand-derived vs reverse/forward mode and finite differences;
                                           check_layer, check_activation, check_loss, check_vjp,
                                           check_jvp, check_hvp (forward mode and curvature)
    funcnn.activations, losses, initializers   the pieces a network is built from
    funcnn.optim                           optimizers, schedules, clipping, L-BFGS, Hessian-free (no optax)
    funcnn.train                           TrainState, make_train_step, make_epoch, fit, fit_many
    funcnn.shuffle                         the keyed, sort-free permutation each epoch is shuffled with
    funcnn.data, funcnn.metrics            datasets, splits, readers; accuracy, F1, R^2, ...
    funcnn.checkpoint                      safe checkpoints
    funcnn.errors                          FuncnnError: the base of every user error funcnn raises
    funcnn.parallel                        data-parallel meshes, multi-host initialisation

The application layer (``funcnn.app``: config, experiment, cli, plots, the
playground, explain, mistakes, sweeps) prints and writes files; the library
never imports it. ``funcnn.config`` (typed TOML configs), ``funcnn.plots``
(optional matplotlib figures), ``funcnn.experiment`` and ``funcnn.cli`` are
its modules under their old names, loaded on first use.
"""
from funcnn import (
                    activations,
                    checkpoint,
                    data,
                    errors,
                    gradcheck,
                    initializers,
                    layers,
                    losses,
                    metrics,
                    optim,
                    parallel,
                    shuffle,
                    train,
)
from funcnn._version import __version__ as __version__
from funcnn.gradcheck import GradcheckReport
from funcnn.mlp import MLP, MLPSpec, count_params, from_spec, mlp, spec_from_dict, with_manual_vjp
from funcnn.network import Cache, Network, NetworkSpec, network

_APP_MODULES = ("config", "experiment", "plots", "cli")  # funcnn.X is funcnn.app.X, imported on first use


def __getattr__(name: str):
    if name in _APP_MODULES:
        import importlib

        return importlib.import_module(f"funcnn.app.{name}")
    raise AttributeError(f"module 'funcnn' has no attribute {name!r}")

__all__ = [
    "MLP",
    "MLPSpec",
    "Cache",
    "GradcheckReport",
    "Network",
    "NetworkSpec",
    "activations",
    "checkpoint",
    "config",
    "count_params",
    "data",
    "errors",
    "from_spec",
    "gradcheck",
    "initializers",
    "layers",
    "losses",
    "metrics",
    "mlp",
    "network",
    "optim",
    "parallel",
    "shuffle",
    "spec_from_dict",
    "train",
    "with_manual_vjp",
]
