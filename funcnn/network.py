"""A network: layers composed in sequence, an output activation and a loss, as pure functions.

``network(layers, input_size=..., output=..., loss=..., l2=...)`` returns a
``Network``: a NamedTuple of pure functions plus its static description. It
owns no parameters: ``init`` makes them, every other function takes them.
Equal arguments give the *same* ``Network`` object (it is built once and
cached), so jitted functions closing over it compile once.

Shapes (n = batch, m = output width)::

    params  list, one entry per layer: that layer's params (dense: {"W", "b"})
    x       [n, input_size]      floating, the parameters' dtype
    y       [n, m]               float targets, or [n] integer labels (losses
                                 that take labels, e.g. cross_entropy)

Forward and backward are the layers' own, composed (``funcnn.layers``)::

    h_0 = x,  h_l = layer_l(h_{l-1}),  z = h_L (the logits),  y = out(z)
    dz from the loss (``funcnn.losses``), then dh_{l-1} = layer_l.backward(dh_l)

The loss is the mean data loss plus lambda/(2n) * sum of squared weights
(every parameter leaf named ``"W"``; biases, layer-norm gains and biases are
not penalised), so each weight's gradient gains (lambda/n) W.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks, activations, losses
from funcnn import layers as _layers
from funcnn.activations import OutputActivation
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.layers import DenseCache
from funcnn.losses import Loss
from funcnn.typing import Array, Params


class NetworkSpec(NamedTuple):
    """A network's description: hashable, JSON-able (``to_dict``), saved in checkpoints."""

    input_size: int
    layers: tuple  # each layer's spec (funcnn.layers.Spec), in order
    output: str = "softmax"  # the output activation's name
    loss: str = "cross_entropy"  # the loss's name
    l2: float = 0.0  # lambda of the lambda/(2n) * sum W^2 penalty

    def to_dict(self) -> dict:
        """A JSON-able dict; ``spec_from_dict`` inverts it."""
        return {"input_size": self.input_size, "layers": [_layers.spec_to_json(s) for s in self.layers],
                "output": self.output, "loss": self.loss, "l2": self.l2}


def spec_from_dict(d: dict) -> NetworkSpec:
    """Inverts ``NetworkSpec.to_dict`` (the pieces are not looked up: ``from_spec`` does that)."""
    d = dict(d)
    unknown = sorted(set(d) - set(NetworkSpec._fields))
    if unknown:
        raise InvalidArgument(f"unknown network spec key(s) {unknown}; allowed are {list(NetworkSpec._fields)}.")
    if not isinstance(d.get("layers"), list):
        raise InvalidArgument(f"a network spec's 'layers' must be a list of layer specs; got {d.get('layers')!r}.")
    return NetworkSpec(_checks.positive_int("input_size", d.get("input_size")),
                       tuple(_layers.spec_from_json(s) for s in d["layers"]),
                       d.get("output", "softmax"), d.get("loss", "cross_entropy"), float(d.get("l2", 0.0)))


class Cache(NamedTuple):
    """What the backward pass needs from the forward pass: each layer's cache, in order.

    For networks made of ``dense`` layers (every ``funcnn.mlp``) the
    properties give the classic names: ``inputs`` (each dense layer's input
    ``h_{l-1}``, dropout applied), ``pre`` and ``post`` (each hidden layer's
    ``z_l`` and ``f(z_l)`` before dropout) and ``masks`` (the dropout masks,
    scaled by 1/(1 - rate); () without dropout).
    """

    layers: tuple

    def _dense(self) -> list:
        return [c for c in self.layers if isinstance(c, DenseCache)]

    @property
    def inputs(self) -> tuple:
        return tuple(c.x for c in self._dense())

    @property
    def pre(self) -> tuple:
        return tuple(c.z for c in self._dense()[:-1])

    @property
    def post(self) -> tuple:
        return tuple(c.y for c in self._dense()[:-1])

    @property
    def masks(self) -> tuple:
        return tuple(c.mask for c in self._dense() if c.mask is not None)


class Network(NamedTuple):
    """A network: its description and pure functions of ``(params, x[, y])``.

    Attributes:
      spec: the description saved in checkpoints (``NetworkSpec``; an
        ``MLPSpec`` for networks built by ``funcnn.mlp``).
      num_params: total number of scalars in the parameters.
      init: ``(key, *, dtype=float32) -> params``.
      apply: ``(params, x, *, key=None) -> y [n, m]``, after the output
        activation. With ``key``, random layers (dropout) draw from it
        (training); without a key they do not (evaluation).
      logits: like ``apply`` but before the output activation.
      predict: ``(params, x) -> predictions``: the output activation's
        ``decide`` (softmax: labels ``[n]`` int32; sigmoid: ``[n, m]`` int32
        thresholded at 0.5), or the outputs themselves (identity).
      loss: ``(params, x, y, *, key=None) -> scalar``, mean data loss + L2 term,
        written forward only: ``jax.grad`` of it is automatic differentiation.
      grad: ``(params, x, y, *, key=None) -> grads``, hand-derived backprop with
        the structure of ``params``.
      value_and_grad: ``(params, x, y, *, key=None) -> (loss, grads)``, hand-derived.
      loss_manual_vjp: the same value as ``loss``, registered with
        ``jax.custom_vjp`` so that ``jax.grad``/``vjp`` (also under ``jit`` and
        ``vmap``) use the hand-derived backward. Differentiable in params, x
        and float targets.
      forward: ``(params, x, *, key=None) -> (z, y, Cache)``, for teaching.
      backward: ``(params, cache, dz, *, need_dx=False) -> (grads, dx)``: the
        backward pass from a given dL/dz; adds the L2 term's gradient.
      layers: the ``Layer`` values, in order.
      output: the ``OutputActivation``.
      criterion: the ``Loss``.
      l2: lambda of the L2 penalty.
      input_size, output_size: the widths of x and of the output.
      random: some layer draws from a key (dropout).
      smooth: every layer, the output activation and the loss are smooth (no
        kinks), so finite differences need no kink detection.
      jvp: ``(params, x, dparams, dx=None) -> (output, doutput)``: forward mode
        by the layers' hand-derived rules and the output's JVP (no dropout);
        ``dx=None`` means a zero input tangent.
      loss_manual_jvp: ``(params, x, y) -> scalar``, the value of ``loss``
        without dropout, registered with ``jax.custom_jvp`` whose rule is the
        hand-derived JVP ``dL = <dL/dz, dz> + (lambda/n) <W, dW> (+ <dL/dt, dt>)``,
        so ``jax.jvp``, ``jacfwd``, ``hessian`` and (by JAX transposing the
        linear rule) ``jax.grad`` of it run on our rules.
      hvp: ``(params, x, y, v) -> H v``, the product of the Hessian of ``loss``
        (data + L2, without dropout) with ``v`` (a pytree like params), derived
        by hand: R{backprop} (Pearlmutter 1994), never forming H, never
        differentiating code automatically. H v is the tangent of the gradient
        when params move along v, so each line of backprop gets its product
        rule (``r`` marks that tangent)::

            R-forward   h_l, rh_l, rcache_l = layer_l.rforward(h_{l-1}, v_l, rh_{l-1}),  rh_0 = 0
            output      rdz = H_z rz                   (Loss.hess; wrt="logits")
                        rdz = R{out.vjp}(g, rz, H_y ry), g = dL/dy, ry = out.jvp(rz)   (wrt="output")
            R-backward  rgrad_l, dh_{l-1}, rdh_{l-1} = layer_l.rbackward(v_l, rcache_l, dh_l, rdh_l)
            L2          H v gains (lambda/n) v_W, the penalty's exact curvature

        The layers' rules are derived in ``funcnn.layers`` beside their
        forward and backward, with each activation's ``grad2``; the outputs'
        ``rvjp`` in ``funcnn.activations``. An activation without ``grad2``
        raises a TypeError naming it; a user's layer without ``rforward``/
        ``rbackward`` is differentiated by ``jax.jvp`` of its own forward and
        backward (that layer only).
      gnvp: ``(params, x, y, v) -> G v``, the generalised Gauss-Newton product
        ``J^T H_out J v + (lambda/n) v_W`` (Schraudolph 2002): for a loss with
        ``wrt="logits"`` (cross-entropy after softmax, logistic after
        sigmoid) J is the Jacobian of the logits and H_out the loss's Hessian
        in the logits; for ``wrt="output"`` (mse) J is the Jacobian of the
        outputs y = out(z) and H_out the loss's Hessian in y (I/n for mse), so G
        is PSD even where the loss is not convex in the logits (mse after
        sigmoid or softmax). Applied without forming J or H_out.
      per_example_grads: ``(params, x, y) -> grads`` with a leading ``[n]``
        axis on every leaf: entry i is ``grad(params, x[i:i+1], y[i:i+1])``
        (so its L2 term is lambda W, the penalty of a batch of one).
      per_example_grad_norms: ``(params, x, y) -> [n]``, the 2-norms of those
        gradients, without forming them (dense: ||x_i||^2 ||dz_i||^2, Goodfellow
        2015; see ``funcnn.layers.layer_sq_norms``).
    """

    spec: Any
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
    layers: tuple
    output: OutputActivation
    criterion: Loss
    l2: float
    input_size: int
    output_size: int
    random: bool
    smooth: bool
    jvp: Callable[..., tuple] | None = None
    loss_manual_jvp: Callable[..., Array] | None = None
    hvp: Callable[..., Params] | None = None
    gnvp: Callable[..., Params] | None = None
    per_example_grads: Callable[..., Params] | None = None
    per_example_grad_norms: Callable[..., Array] | None = None


def network(layers, *, input_size: int, output="softmax", loss="cross_entropy", l2: float = 0.0) -> Network:
    """Composes layers with an output activation and a loss into a network.

    Args:
      layers: a list of ``Layer`` values (``funcnn.layers.dense(...)``, ...,
        or your own), applied in order; the last one's output is the logits.
      input_size: the width of ``x``.
      output: the output activation, a name (``identity``, ``sigmoid``,
        ``softmax``) or an ``OutputActivation`` value.
      loss: a name (``mse``, ``cross_entropy``, ``binary_cross_entropy``) or a
        ``funcnn.losses.Loss`` value; it must fit the output.
      l2: lambda >= 0 of the lambda/(2n) * sum W^2 penalty on every ``"W"`` leaf.

    Returns:
      A ``Network``; equal arguments return the identical object.

    Raises:
      TypeError: ``layers`` is not a list of ``Layer`` values.
      ValueError: a bad input size, unknown names, an (output, loss) pair
        that makes no sense, l2 < 0, layers whose widths do not fit (e.g. a
        residual block that changes the width).

    >>> import jax, funcnn
    >>> from funcnn import layers
    >>> net = funcnn.network([layers.dense(16, "relu"), layers.layer_norm(),
    ...                       layers.residual(layers.dense(16, "tanh")), layers.dense(3)], input_size=4)
    >>> params = net.init(jax.random.key(0))
    >>> [sorted(params[0]), sorted(params[1]), sorted(params[2][0])]   # residual: its inner layers' params
    [['W', 'b'], ['bias', 'gain'], ['W', 'b']]
    >>> net.apply(params, jax.numpy.ones((2, 4), jax.numpy.float32)).shape
    (2, 3)
    """
    layers = _layers.check_layers(layers)
    input_size = _checks.positive_int("input_size", input_size)
    out = activations.output(output)
    crit = losses.resolve(loss)
    losses.get(crit, out)  # the pair must fit
    return build(layers, input_size, out, crit, check_l2(l2))


def check_l2(l2) -> float:
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0 or l2 == math.inf:
        raise InvalidArgument(f"l2 must be a finite number >= 0; got {l2!r}.")
    return float(l2)


@functools.lru_cache(maxsize=256)
def build(layers: tuple, input_size: int, out: OutputActivation, crit: Loss, l2: float,
          spec=None) -> Network:
    """The ``Network`` for validated pieces (cached: equal pieces, same object).

    ``spec`` replaces the ``NetworkSpec`` (``funcnn.mlp`` passes its ``MLPSpec``).
    """
    fns = losses.get(crit, out)
    if spec is None:
        spec = NetworkSpec(input_size, tuple(layer.spec for layer in layers), out.name, crit.name, l2)
    widths = {}

    def abstract_init(key):
        widths["out"], params = _layers.chain_init(layers, key, input_size, jnp.float32)
        return params

    template = jax.eval_shape(lambda: abstract_init(jax.random.key(0)))  # shapes only, no numbers
    m = widths["out"]
    check = _checker(template, layers, input_size, m, crit)

    def init(key, *, dtype=jnp.float32):
        """Draws parameters: one entry per layer, each from its own split of ``key``."""
        if not jnp.issubdtype(dtype, jnp.floating):
            raise InvalidType(f"dtype must be a floating dtype; got {dtype}.")
        _checks.key("key", key)  # not JAX's internal error on an int, a string, a float array
        return _layers.chain_init(layers, key, input_size, dtype)[1]

    def run(params, x, key):
        z, caches = _layers.chain_forward(layers, params, x, key)  # z: [n, m] logits
        return z, out.fn(z), Cache(caches)

    def backward(params, cache, dz, *, need_dx=False, l2_scale=1.0):
        # l2_scale multiplies the L2 term's gradient like dz was multiplied
        # (the custom_vjp passes the incoming cotangent here). Under jit the
        # first layer's unused dx is never computed (dead code).
        grads, dx = _layers.chain_backward(layers, params, cache.layers, dz)
        if l2:
            grads = losses.add_l2_grad(grads, params, l2_scale * l2 / dz.shape[0])
        return grads, dx if need_dx else None

    def total(params, x, y, z, yout):
        v = fns.value(z, yout, y)
        return v + losses.l2_penalty(params, l2, x.shape[0]) if l2 else v

    def forward(params, x, *, key=None):
        check(params, x)
        return run(params, x, key)

    def logits(params, x, *, key=None):
        return forward(params, x, key=key)[0]

    def apply(params, x, *, key=None):
        return forward(params, x, key=key)[1]

    def predict(params, x):
        yout = apply(params, x)
        return yout if out.decide is None else out.decide(yout)

    def loss(params, x, y, *, key=None):
        check(params, x, y)
        z, yout, _ = run(params, x, key)
        return total(params, x, y, z, yout)

    def value_and_grad(params, x, y, *, key=None):
        check(params, x, y)
        z, yout, cache = run(params, x, key)
        grads, _ = backward(params, cache, fns.dlogits(z, yout, y))
        return total(params, x, y, z, yout), grads

    def grad(params, x, y, *, key=None):
        return value_and_grad(params, x, y, key=key)[1]

    @jax.custom_vjp
    def _vjp_loss(params, x, y, key):
        z, yout, _ = run(params, x, key)
        return total(params, x, y, z, yout)

    def _vjp_fwd(params, x, y, key):
        z, yout, cache = run(params, x, key)
        return total(params, x, y, z, yout), (params, cache, z, yout, y)

    def _vjp_bwd(res, g):
        params, cache, z, yout, y = res
        grads, dx = backward(params, cache, g * fns.dlogits(z, yout, y), need_dx=True, l2_scale=g)
        if jnp.issubdtype(y.dtype, jnp.integer):
            dy = np.zeros(y.shape, dtype=jax.dtypes.float0)  # labels have no tangent space
        elif fns.dtargets is None:  # the loss defines no target gradient: NaN, never a silent 0
            dy = jnp.full_like(y, jnp.nan)
        else:
            dy = g * fns.dtargets(z, yout, y)
        return grads, dx, dy, None  # the key has no derivative

    _vjp_loss.defvjp(_vjp_fwd, _vjp_bwd)

    def loss_manual_vjp(params, x, y, *, key=None):
        check(params, x, y)
        return _vjp_loss(params, x, y, key)

    curv = _curvature(layers, out, crit, fns, l2, check, run, total, grad)
    num_params = int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(template)))
    return Network(spec, num_params, init, apply, logits, predict, loss, grad, value_and_grad,
                   loss_manual_vjp, forward, backward, layers, out, crit, l2, input_size, m,
                   any(layer.random for layer in layers),
                   all(layer.smooth for layer in layers) and out.smooth and crit.smooth, *curv)


def _need(piece, field: str, what: str, fix: str):
    f = getattr(piece, field)
    if f is None:
        raise TypeError(f"{type(piece).__name__} {piece.name!r} has no {field}: {what} needs it; {fix}.")
    return f


def _tangent_check(name, tangent, like):
    if jax.tree.structure(tangent) != jax.tree.structure(like) or _shapes(tangent) != _shapes(like):
        raise ValueError(f"{name} must have the structure and shapes of params ({_shapes(like)}); "
                         f"got {_shapes(tangent)}.")


def _rdlogits(out: OutputActivation, crit: Loss, z, yout, y, rz):
    """R{dL/dz} [n, m]: the tangent of the loss's gradient in the logits when they move by ``rz``."""
    hess = _need(crit, "hess", "net.hvp", "give Loss(..., hess=lambda z, y, t, d: H d)")
    if crit.wrt == "logits":
        return hess(z, yout, y, rz)
    # dL/dz = out.vjp(z, y, g) with g = dL/dy: its tangent needs ry, H_y ry and the VJP's own tangent.
    fix = "give OutputActivation(..., jvp=..., rvjp=...)"
    ry = _need(out, "jvp", "net.hvp", fix)(z, yout, rz)
    return _need(out, "rvjp", "net.hvp", fix)(z, yout, crit.grad(z, yout, y), rz, hess(z, yout, y, ry))


def _curvature(layers, out, crit, fns, l2, check, run, total, grad):
    """The forward-mode and second-order functions of a network (see ``Network``'s attributes)."""

    def logits_jvp(params, x, dparams, dx):
        return _layers.chain_jvp(layers, params, x, dparams, dx)

    def jvp(params, x, dparams, dx=None):
        check(params, x)
        _tangent_check("dparams", dparams, params)
        dx = jnp.zeros_like(x) if dx is None else dx
        if getattr(dx, "shape", None) != x.shape:
            raise ValueError(f"dx must have x's shape {x.shape}; got {getattr(dx, 'shape', dx)}.")
        z, dz = logits_jvp(params, x, dparams, dx)
        y = out.fn(z)
        return y, _need(out, "jvp", "forward mode", "give OutputActivation(..., jvp=...)")(z, y, dz)

    def l2_dot(params, dparams, n):
        # d/dt of l2/(2n) sum W^2 along dW: (l2/n) <W, dW>.
        return l2 / n * sum(jnp.sum(w * dw) for w, dw in zip(losses.weights(params), losses.weights(dparams)))

    @jax.custom_jvp
    def _jvp_loss(params, x, y):
        z, yout, _ = run(params, x, None)
        return total(params, x, y, z, yout)

    @_jvp_loss.defjvp
    def _jvp_rule(primals, tangents):
        params, x, y = primals
        dparams, dx, dy = tangents
        dx = jnp.zeros_like(x) if type(dx) is jax.custom_derivatives.SymbolicZero else dx
        z, dz = logits_jvp(params, x, dparams, dx)
        yout = out.fn(z)
        dL = jnp.sum(fns.dlogits(z, yout, y) * dz)
        if l2:
            dL = dL + l2_dot(params, dparams, x.shape[0])
        if jnp.issubdtype(y.dtype, jnp.floating):
            # NaN, never a silent 0, when the loss defines no target gradient.
            dt = jnp.full_like(y, jnp.nan) if fns.dtargets is None else fns.dtargets(z, yout, y)
            dL = dL + jnp.sum(dt * dy)
        return total(params, x, y, z, yout), dL

    def loss_manual_jvp(params, x, y):
        check(params, x, y)
        return _jvp_loss(params, x, y)

    def hvp(params, x, y, v):
        check(params, x, y)
        _tangent_check("v", v, params)
        z, rz, rcaches = _layers.chain_rforward(layers, params, x, v, None)  # x has no tangent
        yout = out.fn(z)
        rgrads, _, _ = _layers.chain_rbackward(layers, params, v, rcaches, fns.dlogits(z, yout, y),
                                               _rdlogits(out, crit, z, yout, y, rz))
        return losses.add_l2_grad(rgrads, v, l2 / x.shape[0]) if l2 else rgrads  # R{(l2/n) W} = (l2/n) v_W

    def gnvp(params, x, y, v):
        check(params, x, y)
        _tangent_check("v", v, params)
        hess = _need(crit, "hess", "the Gauss-Newton product", "give Loss(..., hess=lambda z, y, t, d: H d)")
        z, yout, cache = run(params, x, None)
        _, jz = logits_jvp(params, x, v, jnp.zeros_like(x))  # J v in the logits
        if crit.wrt == "logits":
            hz = hess(z, yout, y, jz)
        else:  # generalised Gauss-Newton of the outputs: J_y^T H_y J_y, J_y = out' J
            ojvp = _need(out, "jvp", "the Gauss-Newton product", "give OutputActivation(..., jvp=...)")
            hz = out.vjp(z, yout, hess(z, yout, y, ojvp(z, yout, jz)))
        g, _ = _layers.chain_backward(layers, params, cache.layers, hz)  # J^T (H_out J v)
        return losses.add_l2_grad(g, v, l2 / x.shape[0]) if l2 else g  # the penalty's Hessian: (l2/n) I on W

    def per_example_grads(params, x, y):
        check(params, x, y)
        return jax.vmap(lambda xi, yi: grad(params, xi[None], yi[None]))(x, y)

    def per_example_grad_norms(params, x, y):
        check(params, x, y)
        z, yout, cache = run(params, x, None)
        # Row i of the batch's dL/dz is row i's own dL/dz divided by n (the loss is a
        # mean over rows, each row independent), so n * dz is every row's alone.
        dz = x.shape[0] * fns.dlogits(z, yout, y)
        sq, _ = _layers.chain_sq_norms(layers, params, cache.layers, dz, l2)  # a batch of one: coef l2/1
        return jnp.sqrt(sq)

    return jvp, loss_manual_jvp, hvp, gnvp, per_example_grads, per_example_grad_norms


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(getattr(a, "shape", ())), tree)


def _checker(template, layers, input_size: int, m: int, crit: Loss):
    """``check(params, x, y=None)``: the trace-time checks every function runs first (free under jit)."""
    treedef = jax.tree.structure(template)
    want = [_shapes(t) for t in template]

    def check_params(params):
        if isinstance(params, (list, tuple)) and len(params) == len(template) \
                and jax.tree.structure(list(params)) == treedef \
                and [_shapes(p) for p in params] == want:
            bad = [jax.tree_util.keystr(path) for path, a in jax.tree_util.tree_flatten_with_path(params)[0]
                   if not jnp.issubdtype(getattr(a, "dtype", np.dtype(type(a))), jnp.floating)]
            if bad:
                raise InvalidType(f"params{bad[0]} must be a floating-point array; got dtype "
                                f"{getattr(jax.tree.leaves(params)[0], 'dtype', None)}. Make params with "
                                "net.init(key, dtype=...).")
            return
        if not isinstance(params, (list, tuple)) or len(params) != len(template):
            got = f"a {type(params).__name__} of length {len(params)}" if isinstance(params, (list, tuple)) \
                else type(params).__name__
            raise InvalidArgument(f"params must be a list of {len(template)} layer dicts, one per layer "
                             f"({', '.join(layer.name for layer in layers)}); got {got}. "
                             "Make them with net.init(key).")
        for i, (p, w) in enumerate(zip(params, want)):
            try:
                got = _shapes(p)
            except Exception:  # noqa: BLE001 - anything that is not a pytree of arrays
                got = p
            if got != w or jax.tree.structure(p) != jax.tree.structure(w):
                raise InvalidArgument(f"params[{i}] must be {w} ({layers[i].name}); got {got}.")

    def check(params, x, y=None):
        check_params(params)
        _checks.floating("x", x)
        if x.ndim != 2 or x.shape[1] != input_size:
            raise InvalidArgument(
                f"x must have shape (batch, {input_size}); got {tuple(x.shape)}."
                + (" For one sample use x[None, :]." if x.ndim == 1 and x.shape[0] == input_size else ""))
        if x.shape[0] == 0:
            raise InvalidArgument(f"x must hold at least one row (sample); got shape {tuple(x.shape)}.")
        dtype = jax.tree.leaves(params)[0].dtype if jax.tree.leaves(params) else x.dtype
        if x.dtype != dtype:
            raise InvalidType(f"x has dtype {x.dtype} but the parameters are {dtype}: cast x with "
                            f"x.astype(jnp.{dtype}) (funcnn never promotes silently).")
        _checks.finite("x", x)
        if y is not None:
            check_targets(y, x.shape[0], m, crit, dtype)

    return check


def check_targets(y, n: int, m: int, crit: Loss, dtype=None) -> None:
    """Checks targets for a loss: integer labels ``[n]`` (if it takes labels) or float rows ``[n, m]``."""
    shape = tuple(getattr(y, "shape", ()))
    ydtype = getattr(y, "dtype", None)
    if ydtype is not None and jnp.issubdtype(ydtype, jnp.integer) and not jnp.issubdtype(ydtype, jnp.bool_):
        if not crit.labels:
            raise InvalidType(f"y holds integer labels, but loss={crit.name!r} needs float targets of shape "
                            f"({n}, {m}); use funcnn.data.one_hot(y, {m}) or loss='cross_entropy'.")
        if shape != (n,):
            raise InvalidArgument(f"y (integer labels) must have shape ({n},); got {shape}.")
        _checks.labels_in_range("y", y, m)
        return
    if ydtype is None or not jnp.issubdtype(ydtype, jnp.floating):
        raise InvalidType(f"y must be a float array of shape ({n}, {m})"
                        + (" or integer labels of shape (n,)" if crit.labels else "")
                        + f"; got dtype {ydtype}.")
    if shape != (n, m):
        raise InvalidArgument(f"y must have shape ({n}, {m}) like the network's output"
                         + (f" (or integer labels of shape ({n},))" if crit.labels else "")
                         + f"; got {shape}.")
    if dtype is not None and ydtype != dtype:
        raise InvalidType(f"y has dtype {ydtype} but the parameters are {dtype}: cast y with "
                        f"y.astype(jnp.{dtype}) (funcnn never promotes silently).")
    _checks.finite("y", y)


def describe(net: Network) -> str:
    """A one-line description: ``64-128-10 relu/softmax/cross_entropy`` or the layers in order."""
    s = net.spec
    if hasattr(s, "summary"):
        return s.summary()
    body = " > ".join(layer.name for layer in net.layers)
    return f"{net.input_size} > {body} {net.output.name}/{net.criterion.name}" + (f" l2={net.l2:g}" if net.l2 else "")
