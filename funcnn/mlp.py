"""The multilayer perceptron as pure functions, with backprop derived by hand.

``mlp(sizes, ...)`` returns an ``MLP``: a NamedTuple of pure functions plus its
static ``MLPSpec``. It owns no parameters: ``init`` makes them, every other
function takes them. Equal specs give the *same* ``MLP`` object (it is built
once and cached), so jitted functions closing over it are compiled once.

Shapes (n = batch, L = number of layers = len(sizes) - 1)::

    params  list of L dicts {"W": [sizes[l], sizes[l+1]], "b": [sizes[l+1]]}
    x       [n, sizes[0]]        floating
    y       [n, sizes[-1]]       float targets, or [n] integer labels (cross_entropy)

Forward, layer l (row-vector convention, as in ``x @ W``)::

    z_l = h_{l-1} W_l + b_l       h_0 = x
    h_l = f(z_l) * mask_l         hidden layers; mask_l is dropout's (inverted) mask
    y   = g(z_L)                  the output activation

Backward, derived by hand (dz_L from the loss, see ``funcnn.losses``)::

    dW_l = h_{l-1}^T dz_l + (lambda / n) W_l      db_l = sum_rows dz_l
    dh_{l-1} = dz_l W_l^T                         dz_{l-1} = dh_{l-1} * mask * f'(z_{l-1})

The loss is the mean data loss plus lambda/(2n) * sum of squared weights
(biases excluded).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks, activations, initializers, losses
from funcnn.initializers import Initializer

Array = jax.Array
Params = list  # list of {"W": Array, "b": Array}

BIAS_INITS = ("zeros", "same")
PRECISIONS = ("default", "bfloat16")


def _matmul(precision: str):
    """``a @ b`` in the parameters' dtype, or with bf16 inputs and float32 accumulation.

    bfloat16 halves the bytes each matmul reads and runs on the bf16 units of
    GPUs/TPUs; accumulating in float32 keeps the sums (and so the loss and the
    gradients, which are float32 like the master parameters) accurate.
    """
    if precision == "default":
        return jnp.matmul

    def mm(a, b):
        out = jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
        return out.astype(jnp.promote_types(a.dtype, b.dtype))

    return mm


def _transposed(a):
    """``a.T`` for the weight gradient ``a.T @ dz``; on CPU, written out first.

    XLA:CPU's matmul kernels run a product whose left operand is a transposed
    view (contracting dimension 0) at about half the speed of a plain one;
    writing ``a.T`` out costs less than that difference (digits-sized step:
    funcnn's epoch 0.97x -> 1.04x the plain jax.grad epoch; MNIST-sized:
    unchanged, at the price of 1.5x the backward's scratch memory, one
    transposed copy of a layer's input at a time; ``scripts/backward_cost.py``).
    The ``optimization_barrier`` keeps XLA from folding the transpose back
    into the matmul. GPUs and TPUs take transposed operands at full speed, so
    they get the plain view.
    """
    return jax.lax.platform_dependent(
        a, cpu=lambda a: jax.lax.optimization_barrier(a.T), default=lambda a: a.T)


class MLPSpec(NamedTuple):
    """Everything that defines a network; hashable, and saved in checkpoints."""

    sizes: tuple[int, ...]  # widths, input first: (64, 128, 10)
    hidden: str = "relu"  # hidden activation, see funcnn.activations
    output: str = "softmax"  # output activation: identity, sigmoid, softmax
    loss: str = "cross_entropy"  # mse, cross_entropy, binary_cross_entropy
    l2: float = 0.0  # lambda of the lambda/(2n) * sum W^2 penalty
    init: Initializer = Initializer("xavier_normal")
    bias_init: str = "zeros"  # zeros, or "same": drawn like the weights
    dropout: float = 0.0  # probability of DROPPING a hidden unit at train time
    precision: str = "default"  # "bfloat16": matmul inputs in bf16, products summed in float32

    def to_dict(self) -> dict:
        """A JSON-able dict; ``spec_from_dict`` inverts it."""
        d = self._asdict()
        d["sizes"] = list(self.sizes)
        d["init"] = self.init._asdict()
        return d


def spec_from_dict(d: dict) -> MLPSpec:
    """Rebuilds (and validates) a spec from ``MLPSpec.to_dict()`` output."""
    d = dict(d)
    unknown = sorted(set(d) - set(MLPSpec._fields))
    if unknown:
        raise ValueError(f"unknown network spec key(s) {unknown}; allowed are {list(MLPSpec._fields)}.")
    init = d.pop("init", "xavier_normal")
    if isinstance(init, dict):
        init = Initializer(**init)
    return mlp(d.pop("sizes"), init=init, **d).spec


class Cache(NamedTuple):
    """What the backward pass needs from the forward pass, and nothing more."""

    inputs: tuple  # L arrays: the input of each layer, h_{l-1} (dropout applied)
    pre: tuple  # L-1 arrays: hidden pre-activations z_l
    post: tuple  # L-1 arrays: hidden activations f(z_l) before dropout
    masks: tuple  # L-1 dropout masks already scaled by 1/(1-rate), or () without dropout


class MLP(NamedTuple):
    """A network: its spec and pure functions of ``(params, x[, y])``.

    Attributes:
      spec: the ``MLPSpec``.
      num_params: total number of scalars in the parameters.
      init: ``(key, *, dtype=float32) -> params``.
      apply: ``(params, x, *, key=None) -> y [n, sizes[-1]]``, after the output
        activation. With ``key`` and dropout > 0, dropout is applied (training);
        without a key it is not (evaluation).
      logits: like ``apply`` but before the output activation.
      predict: ``(params, x) -> labels [n] int32`` (softmax: argmax), ``[n, m]``
        int32 (sigmoid: output > 0.5) or the outputs (identity).
      loss: ``(params, x, y, *, key=None) -> scalar``, mean data loss + L2 term,
        written forward only: ``jax.grad`` of it is automatic differentiation.
      grad: ``(params, x, y, *, key=None) -> grads``, hand-derived backprop with
        the structure of ``params``.
      value_and_grad: ``(params, x, y, *, key=None) -> (loss, grads)``, hand-derived.
      loss_manual_vjp: the same value as ``loss``, registered with
        ``jax.custom_vjp`` so that ``jax.grad``/``vjp`` (also under ``jit`` and
        ``vmap``) use the hand-derived backward. Differentiable in params, x
        and float targets.
      forward: ``(params, x, *, key=None) -> (z_L, y, Cache)``, for teaching.
      backward: ``(params, cache, dz_L, *, need_dx=False) -> (grads, dx)``:
        the backward pass from a given dL/dz_L; adds the L2 term's gradient.
    """

    spec: MLPSpec
    num_params: int
    init: Callable[..., Params]
    apply: Callable[..., Array]
    logits: Callable[..., Array]
    predict: Callable[..., Array]
    loss: Callable[..., Array]
    grad: Callable[..., Params]
    value_and_grad: Callable[..., tuple]
    loss_manual_vjp: Callable[..., Array]
    forward: Callable[..., tuple]
    backward: Callable[..., tuple]


def mlp(sizes, *, hidden: str = "relu", output: str = "softmax", loss: str = "cross_entropy",
        l2: float = 0.0, init: str | Initializer = "xavier_normal", bias_init: str = "zeros",
        dropout: float = 0.0, precision: str = "default") -> MLP:
    """Builds a multilayer perceptron.

    Args:
      sizes: layer widths, input first, e.g. ``[64, 128, 10]``; at least two
        positive ints (two = no hidden layer: linear/logistic regression).
      hidden: hidden activation: ``identity``/``linear``, ``relu``,
        ``leaky_relu``, ``sigmoid``, ``tanh``, ``softplus``, ``elu``, ``gelu``,
        ``swish``/``silu``.
      output: ``identity``, ``sigmoid`` or ``softmax``.
      loss: ``mse`` (1/(2n) convention), ``cross_entropy`` (after softmax) or
        ``binary_cross_entropy`` (after sigmoid). See ``funcnn.losses``.
      l2: lambda >= 0 of the lambda/(2n) * sum W^2 penalty (biases excluded).
      init: weight initializer name or ``funcnn.initializers.uniform(eps)``.
      bias_init: ``zeros`` (default) or ``same`` (drawn like the weights).
      dropout: rate in [0, 1), the probability of dropping a hidden unit.
      precision: ``default`` (matmuls in the parameters' dtype) or
        ``bfloat16`` (matmul inputs rounded to bf16, products accumulated in
        float32; parameters, loss and gradients stay float32). For GPUs/TPUs.

    Returns:
      An ``MLP``; equal arguments return the identical object.

    Raises:
      ValueError: bad sizes, unknown names (listed in the message), an
        (output, loss) pair that makes no sense, l2 < 0, dropout outside [0, 1).
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 2:
        raise ValueError(f"sizes must list at least two layer widths (input and output); got {sizes!r}.")
    sizes = tuple(_checks.positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes))
    act, out = activations.hidden(hidden), activations.output(output)
    losses.get(loss, out)
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0 or l2 == float("inf"):
        raise ValueError(f"l2 must be a finite number >= 0; got {l2!r}.")
    spec = MLPSpec(sizes, act.name, out.name, loss, float(l2), initializers.get(init),
                   _checks.choice("bias_init", bias_init, BIAS_INITS),
                   _checks.probability("dropout", dropout),
                   _checks.choice("precision", precision, PRECISIONS))
    return from_spec(spec)


@functools.lru_cache(maxsize=256)
def from_spec(spec: MLPSpec) -> MLP:
    """Builds the ``MLP`` for a validated spec (cached: equal specs, same object)."""
    sizes, L = spec.sizes, len(spec.sizes) - 1
    act = activations.hidden(spec.hidden)
    out = activations.output(spec.output)
    lossfns = losses.get(spec.loss, out)
    l2, rate = spec.l2, spec.dropout
    mm = _matmul(spec.precision)

    def init(key, *, dtype=jnp.float32):
        """Draws parameters: list of {"W": [fan_in, fan_out], "b": [fan_out]}."""
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"dtype must be a floating dtype; got {dtype}.")
        # One draw of unit noise for all layers, then sliced and scaled per
        # layer: a single random-number kernel compiles several times faster
        # than one per layer, which dominates a cold start.
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

    def masks_for(key, n, dtype):
        if key is None or rate == 0.0 or L == 1:
            return ()
        keep = 1.0 - rate
        keys = jax.random.split(key, L - 1)
        # Inverted dropout: scale kept units by 1/keep at train time so that
        # evaluation (no mask) needs no rescaling.
        return tuple(jax.random.bernoulli(k, keep, (n, sizes[l + 1])).astype(dtype) / keep
                     for l, k in enumerate(keys))

    def forward_masked(params, x, masks):
        h, inputs, pre, post = x, [], [], []
        for l in range(L - 1):
            p = params[l]
            z = mm(h, p["W"]) + p["b"][None, :]  # [n, sizes[l+1]]
            a = act.fn(z)
            inputs.append(h), pre.append(z), post.append(a)
            h = a * masks[l] if masks else a
        inputs.append(h)
        z = mm(h, params[-1]["W"]) + params[-1]["b"][None, :]  # [n, m] logits
        return z, out.fn(z), Cache(tuple(inputs), tuple(pre), tuple(post), tuple(masks))

    def backward(params, cache, dz, *, need_dx=False, l2_scale=1.0):
        # l2_scale multiplies the L2 term's gradient like dz was multiplied
        # (the custom_vjp passes the incoming cotangent here).
        n = dz.shape[0]
        grads = [None] * L
        dx = None
        for l in reversed(range(L)):
            W, h = params[l]["W"], cache.inputs[l]
            dW = mm(_transposed(h), dz)  # [fan_in, fan_out]
            if l2:
                dW = dW + (l2_scale * l2 / n) * W
            grads[l] = {"W": dW, "b": jnp.sum(dz, axis=0)}
            if l == 0 and not need_dx:
                break
            dh = mm(dz, W.T)  # [n, fan_in]
            if l == 0:
                dx = dh
                break
            if cache.masks:
                dh = dh * cache.masks[l - 1]
            dz = dh * act.grad(cache.pre[l - 1], cache.post[l - 1])
        return grads, dx

    def check(params, x, y=None):
        # Shape, dtype and structure checks run at trace time: free under jit.
        _check_params(params, sizes)
        _checks.floating("x", x)
        if x.ndim != 2 or x.shape[1] != sizes[0]:
            raise ValueError(
                f"x must have shape (batch, {sizes[0]}); got {tuple(x.shape)}."
                + (" For one sample use x[None, :]." if x.ndim == 1 and x.shape[0] == sizes[0] else ""))
        _checks.finite("x", x)
        if y is not None:
            _check_targets(y, x.shape[0], sizes[-1], spec.loss)

    def total(params, x, y, z, yout):
        v = lossfns.value(z, yout, y)
        return v + losses.l2_penalty(params, l2, x.shape[0]) if l2 else v

    def forward(params, x, *, key=None):
        check(params, x)
        return forward_masked(params, x, masks_for(key, x.shape[0], x.dtype))

    def logits(params, x, *, key=None):
        return forward(params, x, key=key)[0]

    def apply(params, x, *, key=None):
        return forward(params, x, key=key)[1]

    def predict(params, x):
        yout = apply(params, x)
        if spec.output == "softmax":
            return jnp.argmax(yout, axis=-1).astype(jnp.int32)
        if spec.output == "sigmoid":
            return (yout > 0.5).astype(jnp.int32)
        return yout

    def loss(params, x, y, *, key=None):
        check(params, x, y)
        z, yout, _ = forward_masked(params, x, masks_for(key, x.shape[0], x.dtype))
        return total(params, x, y, z, yout)

    def value_and_grad(params, x, y, *, key=None):
        check(params, x, y)
        z, yout, cache = forward_masked(params, x, masks_for(key, x.shape[0], x.dtype))
        grads, _ = backward(params, cache, lossfns.dlogits(z, yout, y))
        return total(params, x, y, z, yout), grads

    def grad(params, x, y, *, key=None):
        return value_and_grad(params, x, y, key=key)[1]

    @jax.custom_vjp
    def _vjp_loss(params, x, y, masks):
        z, yout, _ = forward_masked(params, x, masks)
        return total(params, x, y, z, yout)

    def _vjp_fwd(params, x, y, masks):
        z, yout, cache = forward_masked(params, x, masks)
        return total(params, x, y, z, yout), (params, cache, z, yout, y)

    def _vjp_bwd(res, g):
        params, cache, z, yout, y = res
        grads, dx = backward(params, cache, g * lossfns.dlogits(z, yout, y), need_dx=True, l2_scale=g)
        if jnp.issubdtype(y.dtype, jnp.integer):
            dy = np.zeros(y.shape, dtype=jax.dtypes.float0)  # labels have no tangent space
        else:
            dy = g * lossfns.dtargets(z, yout, y)
        # The masks come from a key, which has no derivative: their cotangent is zero.
        return grads, dx, dy, tuple(jnp.zeros_like(m) for m in cache.masks)

    _vjp_loss.defvjp(_vjp_fwd, _vjp_bwd)

    def loss_manual_vjp(params, x, y, *, key=None):
        check(params, x, y)
        return _vjp_loss(params, x, y, masks_for(key, x.shape[0], x.dtype))

    num_params = sum(sizes[l] * sizes[l + 1] + sizes[l + 1] for l in range(L))
    return MLP(spec, num_params, init, apply, logits, predict, loss, grad, value_and_grad,
               loss_manual_vjp, forward, backward)


def _check_params(params, sizes) -> None:
    L = len(sizes) - 1
    if not isinstance(params, (list, tuple)) or len(params) != L:
        got = f"a {type(params).__name__} of length {len(params)}" if isinstance(params, (list, tuple)) \
            else type(params).__name__
        raise ValueError(f"params must be a list of {L} layer dicts for sizes {list(sizes)}; got {got}. "
                         "Make them with net.init(key).")
    for l, p in enumerate(params):
        want = {"W": (sizes[l], sizes[l + 1]), "b": (sizes[l + 1],)}
        got = {k: tuple(getattr(v, "shape", ())) for k, v in p.items()} if isinstance(p, dict) else p
        if got != want:
            raise ValueError(f"params[{l}] must be {{'W': {want['W']}, 'b': {want['b']}}}; got {got}.")


def _check_targets(y, n: int, m: int, loss: str) -> None:
    shape = tuple(getattr(y, "shape", ()))
    dtype = getattr(y, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.integer) and not jnp.issubdtype(dtype, jnp.bool_):
        if loss != "cross_entropy":
            raise TypeError(f"y holds integer labels, but loss={loss!r} needs float targets of shape "
                            f"({n}, {m}); use funcnn.data.one_hot(y, {m}) or loss='cross_entropy'.")
        if shape != (n,):
            raise ValueError(f"y (integer labels) must have shape ({n},); got {shape}.")
        _checks.labels_in_range("y", y, m)
        return
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"y must be a float array of shape ({n}, {m})"
                        + (" or integer labels of shape (n,)" if loss == "cross_entropy" else "")
                        + f"; got dtype {dtype}.")
    if shape != (n, m):
        raise ValueError(f"y must have shape ({n}, {m}) like the network's output"
                         + (f" (or integer labels of shape ({n},))" if loss == "cross_entropy" else "")
                         + f"; got {shape}.")
    _checks.finite("y", y)


def count_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def with_manual_vjp(net: MLP) -> Callable[..., Array]:
    """``net.loss_manual_vjp``: the loss whose ``jax.grad`` runs the hand-derived backward."""
    return net.loss_manual_vjp
