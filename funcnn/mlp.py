"""The multilayer perceptron: a thin builder of ``dense`` layers composed by ``funcnn.network``.

``mlp(sizes, ...)`` returns a ``Network`` (``MLP`` is the same type) whose
layers are ``funcnn.layers.dense``: one code path for every network. Its
spec is an ``MLPSpec``, the description checkpoints have always stored.
Equal arguments give the *same* object (built once and cached), so jitted
functions closing over it are compiled once.

Shapes (n = batch, L = number of layers = len(sizes) - 1)::

    params  list of L dicts {"W": [sizes[l], sizes[l+1]], "b": [sizes[l+1]]}
    x       [n, sizes[0]]        floating
    y       [n, sizes[-1]]       float targets, or [n] integer labels (cross_entropy)

Forward, layer l (row-vector convention, as in ``x @ W``)::

    z_l = h_{l-1} W_l + b_l       h_0 = x
    h_l = f_l(z_l) * mask_l       hidden layers; mask_l is dropout's (inverted) mask
    y   = g(z_L)                  the output activation

Backward, derived by hand (dz_L from the loss, see ``funcnn.losses``)::

    dW_l = h_{l-1}^T dz_l + (lambda / n) W_l      db_l = sum_rows dz_l
    dh_{l-1} = dz_l W_l^T                         dz_{l-1} = dh_{l-1} * mask * f'(z_{l-1})

The loss is the mean data loss plus lambda/(2n) * sum of squared weights
(biases excluded).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks, activations, initializers, layers, losses
from funcnn import network as _network
from funcnn.activations import Activation
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.initializers import Initializer
from funcnn.layers import BIAS_INITS, PRECISIONS
from funcnn.network import Cache, Network
from funcnn.typing import Array

MLP = Network  # every network, an MLP included, is a Network

__all__ = ["MLP", "MLPSpec", "Cache", "BIAS_INITS", "PRECISIONS", "mlp", "from_spec", "spec_from_dict",
           "count_params", "with_manual_vjp"]


class MLPSpec(NamedTuple):
    """Everything that defines an MLP; hashable, and saved in checkpoints."""

    sizes: tuple[int, ...]  # widths, input first: (64, 128, 10)
    hidden: str | tuple[str, ...] = "relu"  # hidden activation, or one per hidden layer
    output: str = "softmax"  # output activation: identity, sigmoid, softmax
    loss: str = "cross_entropy"  # mse, cross_entropy, binary_cross_entropy
    l2: float = 0.0  # lambda of the lambda/(2n) * sum W^2 penalty
    init: Initializer = Initializer("xavier_normal")
    bias_init: str = "zeros"  # zeros, or "same": drawn like the weights
    dropout: float | tuple[float, ...] = 0.0  # probability of DROPPING a hidden unit, or one per hidden layer
    precision: str = "default"  # "bfloat16": matmul inputs in bf16, products summed in float32

    def to_dict(self) -> dict:
        """A JSON-able dict; ``spec_from_dict`` inverts it."""
        d = self._asdict()
        d["sizes"] = list(self.sizes)
        d["init"] = self.init._asdict()
        for k in ("hidden", "dropout"):
            if isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d

    def summary(self) -> str:
        """``64-128-10 relu/softmax/cross_entropy`` (with l2 and dropout when set)."""
        hidden = self.hidden if isinstance(self.hidden, str) else ",".join(self.hidden)
        drop = self.dropout if isinstance(self.dropout, float) else max(self.dropout, default=0.0)
        rates = f"{self.dropout:g}" if isinstance(self.dropout, float) else ",".join(f"{r:g}" for r in self.dropout)
        return (f"{'-'.join(map(str, self.sizes))} {hidden}/{self.output}/{self.loss}"
                + (f" l2={self.l2:g}" if self.l2 else "") + (f" dropout={rates}" if drop else ""))


def spec_from_dict(d: dict, *, custom=()) -> MLPSpec:
    """Rebuilds (and validates) a spec from ``MLPSpec.to_dict()`` output.

    ``custom``: users' pieces (``Activation``, ``OutputActivation``, ``Loss``
    values) that the spec's names refer to.
    """
    d = dict(d)
    unknown = sorted(set(d) - set(MLPSpec._fields))
    if unknown:
        raise InvalidArgument(f"unknown network spec key(s) {unknown}; allowed are {list(MLPSpec._fields)}.")
    init = d.pop("init", "xavier_normal")
    if isinstance(init, dict):
        init = Initializer(**init)
    return _resolve(d.pop("sizes"), init=init, custom=custom, **d)[0]


def mlp(sizes, *, hidden="relu", output="softmax", loss="cross_entropy", l2: float = 0.0,
        init: str | Initializer = "xavier_normal", bias_init: str = "zeros", dropout=0.0,
        precision: str = "default") -> Network:
    """Builds a multilayer perceptron.

    Args:
      sizes: layer widths, input first, e.g. ``[64, 128, 10]``; at least two
        positive ints (two = no hidden layer: linear/logistic regression).
      hidden: the hidden activation: a name (``identity``/``linear``,
        ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``, ``softplus``,
        ``elu``, ``gelu``, ``swish``/``silu``), an
        ``funcnn.activations.Activation`` value (a function with its
        derivative), or a list of them, one per hidden layer.
      output: ``identity``, ``sigmoid``, ``softmax``, or an
        ``OutputActivation`` value.
      loss: ``mse`` (1/(2n) convention), ``cross_entropy`` (after softmax),
        ``binary_cross_entropy`` (after sigmoid), or a ``funcnn.losses.Loss``
        value. See ``funcnn.losses``.
      l2: lambda >= 0 of the lambda/(2n) * sum W^2 penalty (biases excluded).
      init: weight initializer name or ``funcnn.initializers.uniform(eps)``.
      bias_init: ``zeros`` (default) or ``same`` (drawn like the weights).
      dropout: rate in [0, 1), the probability of dropping a hidden unit, or
        a list of rates, one per hidden layer.
      precision: ``default`` (matmuls in the parameters' dtype) or
        ``bfloat16`` (matmul inputs rounded to bf16, products accumulated in
        float32; parameters, loss and gradients stay float32). For GPUs/TPUs.

    Returns:
      A ``Network`` (``MLP``) whose parameters are one ``{"W", "b"}`` dict
      per layer; equal arguments return the identical object.

    Raises:
      ValueError: bad sizes, unknown names (listed in the message), a list
        of activations or rates whose length is not the number of hidden
        layers, an (output, loss) pair that makes no sense, l2 < 0, dropout
        outside [0, 1).

    >>> import jax, funcnn
    >>> net = funcnn.mlp([4, 8, 3], hidden="tanh")
    >>> params = net.init(jax.random.key(0))
    >>> [(p["W"].shape, p["b"].shape) for p in params]
    [((4, 8), (8,)), ((8, 3), (3,))]
    >>> x, y = jax.numpy.ones((5, 4), jax.numpy.float32), jax.numpy.array([0, 1, 2, 0, 1])
    >>> loss, grads = net.value_and_grad(params, x, y)      # hand-derived backprop
    >>> bool(jax.numpy.allclose(grads[0]["W"], jax.grad(net.loss)(params, x, y)[0]["W"], atol=1e-6))
    True
    """
    return _build(*_resolve(sizes, hidden=hidden, output=output, loss=loss, l2=l2, init=init,
                            bias_init=bias_init, dropout=dropout, precision=precision))


def _resolve(sizes, *, hidden="relu", output="softmax", loss="cross_entropy", l2=0.0, init="xavier_normal",
             bias_init="zeros", dropout=0.0, precision="default", custom=()):
    """(MLPSpec, hidden activations, output activation, loss), every argument checked."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 2:
        raise InvalidArgument(f"sizes must list at least two layer widths (input and output); got {sizes!r}.")
    sizes = tuple(_checks.positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes))
    hidden_layers = len(sizes) - 2
    acts = _per_layer("hidden", hidden, hidden_layers,
                      lambda a: activations.hidden(a, custom=custom), lambda a: a.name)
    rates = _per_layer("dropout", dropout, hidden_layers,
                       lambda r: _checks.probability("dropout", r), lambda r: r)
    out = activations.output(output, custom=custom)
    crit = losses.resolve(loss, custom=custom)
    losses.get(crit, out)  # the pair must fit
    spec = MLPSpec(sizes, _spelling(hidden, acts[0], [a.name for a in acts[1]]), out.name, crit.name,
                   _network.check_l2(l2), initializers.get(init),
                   _checks.choice("bias_init", bias_init, BIAS_INITS),
                   _spelling(dropout, rates[0], rates[1]),
                   _checks.choice("precision", precision, PRECISIONS))
    return spec, tuple(acts[1]), out, crit


def _per_layer(name: str, value, count: int, check: Callable, key: Callable):
    """(the single value checked or None, the list of ``count`` checked values, one per hidden layer)."""
    if isinstance(value, (list, tuple)) and not isinstance(value, Activation):
        if len(value) != count:
            raise InvalidArgument(f"{name} lists {len(value)} value(s), but the network has {count} hidden "
                             f"layer(s): give one per hidden layer, or a single one for all.")
        return None, [check(v) for v in value]
    single = check(value)
    return single, [single] * count


def _spelling(given, single, per_layer: list):
    """What the spec records: one name (or rate) for all layers when that is what they are."""
    if single is not None:
        return single.name if isinstance(single, Activation) else single
    if per_layer and all(v == per_layer[0] for v in per_layer):
        return per_layer[0]
    return tuple(per_layer)


def _rates(spec: MLPSpec) -> tuple[float, ...]:
    n = len(spec.sizes) - 2
    return spec.dropout if isinstance(spec.dropout, tuple) else (spec.dropout,) * n


@functools.lru_cache(maxsize=256)
def _build(spec: MLPSpec, acts: tuple, out, crit) -> Network:
    sizes = spec.sizes
    dense = functools.partial(layers.dense, init=spec.init, bias_init=spec.bias_init, precision=spec.precision)
    stack = [dense(w, a, dropout=r) for w, a, r in zip(sizes[1:-1], acts, _rates(spec))] + [dense(sizes[-1])]
    net = _network.build(tuple(stack), sizes[0], out, crit, spec.l2, spec)
    return net._replace(init=_init_fn(spec))


def _init_fn(spec: MLPSpec):
    """An MLP's init: every layer's weights drawn from ONE unit-noise draw, sliced and scaled.

    A single random-number kernel compiles several times faster than one per
    layer, which dominates a cold start; and it is the draw funcnn 0.1 made,
    so a key gives the parameters it always gave. (``funcnn.network`` draws
    each layer from its own split of the key: the same distributions, other
    numbers.)
    """
    sizes, L = spec.sizes, len(spec.sizes) - 1

    def init(key, *, dtype=jnp.float32):
        """Draws parameters: list of {"W": [fan_in, fan_out], "b": [fan_out]}."""
        if not jnp.issubdtype(dtype, jnp.floating):
            raise InvalidType(f"dtype must be a floating dtype; got {dtype}.")
        _checks.key("key", key)  # not JAX's internal error on an int, a string, a float array
        same = spec.bias_init == "same"
        counts = [sizes[l] * sizes[l + 1] + (sizes[l + 1] if same else 0) for l in range(L)]
        kind = initializers.scale(spec.init, sizes[0], sizes[1])[0]
        unit = initializers.standard(kind, key, (sum(counts),), dtype)
        params, start = [], 0
        for l in range(L):
            fi, fo = sizes[l], sizes[l + 1]
            s = initializers.scale(spec.init, fi, fo)[1]
            W = s * unit[start:start + fi * fo].reshape(fi, fo)
            b = s * unit[start + fi * fo:start + counts[l]] if same else jnp.zeros((fo,), dtype)
            params.append({"W": W, "b": b})
            start += counts[l]
        return params

    return init


def from_spec(spec, *, custom=()) -> Network:
    """Builds the network a spec describes (cached: equal specs, same object).

    Args:
      spec: an ``MLPSpec`` or a ``funcnn.network.NetworkSpec`` (or their
        ``to_dict()`` forms).
      custom: users' pieces the spec names (``Activation``,
        ``OutputActivation``, ``Loss`` and ``Layer`` values).

    Raises:
      ValueError: a spec that names a piece which is neither built in nor in
        ``custom``.
    """
    custom = tuple(custom)
    if isinstance(spec, dict):
        spec = _network.spec_from_dict(spec) if "layers" in spec else spec_from_dict(spec, custom=custom)
    if isinstance(spec, MLPSpec):
        d = spec._asdict()
        return _build(*_resolve(d.pop("sizes"), custom=custom, **d))
    if isinstance(spec, _network.NetworkSpec):
        stack = tuple(layers.from_spec(s, custom=custom) for s in spec.layers)
        out = activations.output(spec.output, custom=custom)
        crit = losses.resolve(spec.loss, custom=custom)
        losses.get(crit, out)
        return _network.build(stack, spec.input_size, out, crit, _network.check_l2(spec.l2))
    raise InvalidType(f"spec must be an MLPSpec or a NetworkSpec (net.spec); got {type(spec).__name__}.")


def count_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def with_manual_vjp(net: Network) -> Callable[..., Array]:
    """``net.loss_manual_vjp``: the loss whose ``jax.grad`` runs the hand-derived backward."""
    return net.loss_manual_vjp
