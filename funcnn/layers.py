"""Layers: each one's forward pass beside its backward pass, derived by hand.

Contract (stated once, as in stax): a layer is a ``Layer`` NamedTuple of pure
functions and a description::

    out_width, params = init(key, in_width, dtype)
    y, cache          = forward(params, x, *, key=None)   x: [n, in_width], y: [n, out_width]
    dparams, dx       = backward(params, cache, dy)        dy = dL/dy: [n, out_width]
                                                           dparams: the structure of params
                                                           dx = dL/dx: [n, in_width]
    spec              hashable, JSON-able: Spec(name, hyperparameters), for checkpoints

Optional, for curvature and per-example quantities (``funcnn.network``'s
``jvp``, ``gnvp``, ``loss_manual_jvp``, ``per_example_grad_norms``)::

    y, dy = jvp(params, x, dparams, dx)                   forward mode (the R-operator,
                                                          Pearlmutter 1994): dy = J_params dparams + J_x dx,
                                                          deterministic (no dropout)
    sq    = sq_norms(params, cache, dy, coef)             [n]: ||dparams_i + coef * W||^2 per sample i,
                                                          dparams_i the gradient of row i's loss alone

and, as a pair, for the hand-derived Hessian-vector product ``net.hvp``
(R{backprop}, Pearlmutter 1994: the tangent of the backward pass when the
params move along ``v``; ``r`` marks a tangent, R{.})::

    y, ry, rcache     = rforward(params, x, v, rx)        the forward pass and its tangent (ry is jvp's dy);
                                                          rx None means a zero input tangent (the
                                                          network's input); rcache: what rbackward needs
    rdparams, dx, rdx = rbackward(params, v, rcache, dy, rdy)
                                                          dx as backward gives it; rdparams, rdx the
                                                          tangents of backward's dparams and dx when
                                                          params move by v, x by rx and dy by rdy

A layer without ``jvp`` works everywhere except forward mode, which raises
a clear error naming it; without ``sq_norms`` the per-example norms fall
back to the layer's own backward vmapped over rows (``layer_sq_norms``);
without ``rforward``/``rbackward``, ``net.hvp`` falls back, for that layer
only, to JAX's forward mode over the layer's own forward and backward
(``layer_rforward``, ``layer_rbackward``). Every built-in layer has all of them.

* ``params`` is a pytree of arrays (``{}`` for a layer without parameters,
  whose ``dparams`` is ``{}`` too). A leaf named ``"W"`` is a weight: the
  network's L2 penalty applies to it and to nothing else.
* ``cache`` holds only what ``backward`` needs, for the same ``params``.
* ``forward`` uses ``key`` only when ``random`` is True (dropout). Without a
  key it is deterministic: evaluation. A layer whose randomness is dropout
  says so with ``dropout_key=True``: it also takes a ``DropoutKey``, whose
  keep probability replaces its own rate (``funcnn.train.fit_many``'s
  per-model ``dropouts``: one compiled program for several rates).
* ``smooth`` says the forward pass has no kinks in params and x, so finite
  differences need no kink detection. A user's layer defaults to False,
  which costs ``funcnn.gradcheck`` time, never a false failure.
* Every sample is processed independently (row-wise): nothing mixes rows.

A user's layer is just such a value; ``funcnn.gradcheck.check_layer`` proves
its backward against ``jax.vjp`` of its forward, forward mode and float64
finite differences. Example, a scaled-tanh layer without parameters::

    def scaled_tanh(a=1.7159, b=2 / 3):
        def init(key, d, dtype):
            return d, {}
        def forward(params, x, *, key=None):
            y = a * jnp.tanh(b * x)
            return y, y
        def backward(params, y, dy):
            return {}, dy * b * (a - y * y / a)   # d/dx a tanh(bx) = ab (1 - tanh^2)
        return Layer("scaled_tanh", init, forward, backward, spec("scaled_tanh", a=a, b=b), smooth=True)

Built-in layers (constructors are cached: equal arguments give the same
value, so networks made of them compile once): ``dense``, ``activation``,
``dropout``, ``layer_norm``, ``residual``.
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks, activations, initializers
from funcnn.activations import Activation
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.initializers import Initializer
from funcnn.typing import Array

PRECISIONS = ("default", "bfloat16")
BIAS_INITS = ("zeros", "same")


class Spec(NamedTuple):
    """A piece's description: its name and hyperparameters, hashable and JSON-able.

    ``args`` is a sorted tuple of ``(key, value)`` pairs whose values are
    JSON scalars, tuples of values, or nested ``Spec``s. ``to_json`` gives
    ``{"name": name, **args}`` with lists for tuples; ``spec_from_json``
    inverts it (any dict with a ``"name"`` is a ``Spec``).
    """

    name: str
    args: tuple = ()

    def get(self, key: str, default=None):
        return dict(self.args).get(key, default)

    def to_json(self) -> dict:
        return {"name": self.name, **{k: _thaw(v) for k, v in self.args}}


def spec(name: str, **hyperparameters) -> Spec:
    """A ``Spec`` for a layer: ``spec("maxout", k=2)``. Lists become tuples, dicts ``Spec``s.

    Raises:
      TypeError: a hyperparameter that is not JSON-able (a function, an array).
    """
    if not isinstance(name, str) or not name:
        raise InvalidType(f"a spec's name must be a non-empty string; got {name!r}.")
    frozen = Spec(name, tuple(sorted((k, _freeze(k, v)) for k, v in hyperparameters.items())))
    try:
        json.dumps(frozen.to_json(), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidType(f"spec {name!r}: hyperparameters must be JSON-able (numbers, strings, bools, "
                        f"None, lists, dicts); {e}.") from None
    return frozen


def spec_from_json(d) -> Spec:
    """Inverts ``Spec.to_json``."""
    if not isinstance(d, dict) or not isinstance(d.get("name"), str):
        raise InvalidArgument(f"a piece's spec must be a dict with a 'name'; got {d!r}.")
    return spec(d["name"], **{k: v for k, v in d.items() if k != "name"})


def _freeze(key, v):
    if isinstance(v, Spec):
        return v
    if isinstance(v, dict):
        return spec_from_json(v)
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(key, e) for e in v)
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    raise InvalidType(f"{key}={v!r} ({type(v).__name__}) is not a JSON value")


def _thaw(v):
    if isinstance(v, Spec):
        return v.to_json()
    if isinstance(v, tuple):
        return [_thaw(e) for e in v]
    return v


class Layer(NamedTuple):
    """A layer: ``init``, ``forward`` and hand-derived ``backward``; see the module docstring."""

    name: str  # for reports and errors, e.g. "dense(128, relu)"
    init: Callable[..., tuple]  # (key, in_width, dtype) -> (out_width, params)
    forward: Callable[..., tuple]  # (params, x, *, key=None) -> (y, cache)
    backward: Callable[..., tuple]  # (params, cache, dy) -> (dparams, dx)
    spec: Any  # a Spec: hashable, JSON-able (name + hyperparameters)
    random: bool = False  # forward draws from its key (dropout)
    smooth: bool = False  # forward has no kinks: finite differences need no kink detection
    jvp: Callable[..., tuple] | None = None  # (params, x, dparams, dx) -> (y, dy); None: no forward mode
    sq_norms: Callable[..., Array] | None = None  # (params, cache, dy, coef) -> [n]; None: generic fallback
    rforward: Callable[..., tuple] | None = None  # (params, x, v, rx) -> (y, ry, rcache); None: jax.jvp fallback
    rbackward: Callable[..., tuple] | None = None  # (params, v, rcache, dy, rdy) -> (rdparams, dx, rdx)
    dropout_key: bool = False  # random only by dropout: forward also takes a DropoutKey (its keep replaces the rate)


class DropoutKey(NamedTuple):
    """A key for a network's random layers that also sets their dropout rate.

    Every layer with ``dropout_key`` that it reaches drops with probability
    ``1 - keep`` instead of its own rate, drawing its mask from its split of
    ``key`` exactly as that layer built with rate ``1 - keep`` would (the
    same bits when ``keep`` is ``1 - rate`` rounded to the default float
    dtype, which is what a Python-float rate becomes). ``keep`` may be
    traced: ``fit_many`` vmaps it, one rate per model. ``keep = 1`` keeps
    every unit (mask of ones): the same numbers as no dropout.
    """

    key: Array  # a jax.random key
    keep: Array  # scalar in (0, 1], the default float dtype: 1 - the dropout rate (keep_of)


# The rate to build dropout layers with when every call's DropoutKey sets the real one
# (sweeps and the scikit-learn estimators): any rate > 0 makes the layer random.
STAND_IN_RATE = 0.5


def keep_of(rate) -> Array:
    """``1 - rate`` (a number or an array of them) as ``DropoutKey.keep`` wants it.

    Computed in float64, then cast to the default float dtype: the value a
    layer built with the Python-float ``rate`` draws its mask with, so the
    masks are that layer's own, bit for bit.
    """
    return jnp.asarray(1.0 - np.asarray(rate, np.float64), jnp.result_type(float))


# ------------------------------------------------------------------ matmuls


def matmul(precision: str):
    """``a @ b`` in the inputs' dtype, or with bf16 inputs and float32 accumulation.

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


def transposed(a):
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


# ------------------------------------------------------------------ dense


class DenseCache(NamedTuple):
    x: Array  # [n, in]: the layer's input
    z: Array  # [n, width]: x W + b
    y: Array  # [n, width]: f(z) before dropout (z itself without an activation)
    mask: Array | None  # [n, width]: dropout's scaled mask, or None (no key, or no dropout)


def dense(width: int, activation=None, *, dropout: float = 0.0, init="xavier_normal",
          bias_init: str = "zeros", precision: str = "default") -> Layer:
    """A fully connected layer ``z = x W + b`` followed by an elementwise activation.

    Forward and backward (row-vector convention, ``f`` the activation, ``m``
    dropout's mask when ``dropout > 0`` and a key is given, else 1)::

        z = x W + b        h = f(z) * m                  x: [n, d], W: [d, width], b: [width]
        dz = dy * m * f'(z)    dW = x^T dz    db = sum_rows dz    dx = dz W^T

    Forward mode (tangents dW, db, dx; product rule on x W, chain rule on f;
    no dropout)::

        dz = dx W + x dW + db          dh = f'(z) * dz

    R-backward (``rforward``/``rbackward``; params move by v = (vW, vb), x by
    rx, the cotangent dy by rdy; rz the tangent of z above): the product rule
    on each line of the backward, with f'' the activation's ``grad2``::

        dz = dy * f'(z)                rdz = rdy * f'(z) + dy * f''(z) * rz
        dW = x^T dz                    rdW = rx^T dz + x^T rdz      (rx = 0: the network's input)
        db = sum_rows dz               rdb = sum_rows rdz
        dx = dz W^T                    rdx = rdz W^T + dz vW^T

    Per-example squared gradient norms (Goodfellow 2015): row i's gradient
    is the outer product ``x_i^T dz_i``, so ``||dW_i||^2 = ||x_i||^2 ||dz_i||^2``
    and ``||db_i||^2 = ||dz_i||^2``; with ``coef * W`` added,
    ``||dW_i + coef W||^2 = ||x_i||^2 ||dz_i||^2 + 2 coef <x_i W, dz_i> + coef^2 ||W||^2``.
    Nothing of size [n, d, width] is formed.

    Args:
      width: output width (a positive int).
      activation: None (``y = z``), a name (``"relu"``, see
        ``funcnn.activations``) or an ``Activation`` value.
      dropout: probability of dropping each output unit at train time, in
        [0, 1) (inverted dropout, as ``funcnn.layers.dropout``). Built into
        the layer so that an MLP's parameters stay one ``{"W", "b"}`` per layer.
      init: weight initializer, a name or ``funcnn.initializers.uniform(eps)``.
      bias_init: ``"zeros"`` or ``"same"`` (drawn like the weights).
      precision: ``"default"`` or ``"bfloat16"`` (bf16 matmul inputs, float32 sums).

    Returns:
      A ``Layer`` with params ``{"W": [in, width], "b": [width]}``.

    Raises:
      ValueError: a non-positive width, an unknown name, a rate outside [0, 1).
    """
    return _dense(_checks.positive_int("width", width),
                  None if activation is None else activations.hidden(activation),
                  _checks.probability("dropout", dropout), initializers.get(init),
                  _checks.choice("bias_init", bias_init, BIAS_INITS),
                  _checks.choice("precision", precision, PRECISIONS))


@functools.lru_cache(maxsize=1024)
def _dense(width: int, act: Activation | None, rate: float, ini: Initializer, bias_init: str,
           precision: str) -> Layer:
    mm = matmul(precision)

    def init_fn(key, in_width, dtype):
        k_w, k_b = jax.random.split(key)
        W = initializers.sample(ini, k_w, (in_width, width), in_width, width, dtype)
        b = (initializers.sample(ini, k_b, (width,), in_width, width, dtype) if bias_init == "same"
             else jnp.zeros((width,), dtype))
        return width, {"W": W, "b": b}

    def forward(params, x, *, key=None):
        z = mm(x, params["W"]) + params["b"][None, :]  # [n, width]
        y = z if act is None else act.fn(z)
        out, mask = _drop(rate, key, y)
        return out, DenseCache(x, z, y, mask)

    def backward(params, cache, dy):
        dy = _undrop(cache.mask, dy)
        dz = dy if act is None else dy * act.grad(cache.z, cache.y)
        dW = mm(transposed(cache.x), dz)  # [in, width]
        return {"W": dW, "b": jnp.sum(dz, axis=0)}, mm(dz, params["W"].T)

    def rforward(params, x, v, rx):
        z = mm(x, params["W"]) + params["b"][None, :]  # [n, width]
        rz = mm(x, v["W"]) + v["b"][None, :]
        if rx is not None:  # a zero input tangent (the network's input) costs no matmul
            rz = rz + mm(rx, params["W"])
        y = z if act is None else act.fn(z)
        return y, rz if act is None else act.grad(z, y) * rz, DenseRCache(x, rx, z, y, rz)

    def rbackward(params, v, c, dy, rdy):
        if act is None:
            dz, rdz = dy, rdy
        else:
            f1 = act.grad(c.z, c.y)
            dz, rdz = dy * f1, rdy * f1
            if need_grad2(act) is not activations.zero_grad2:  # piecewise linear: no f'' term
                rdz = rdz + dy * act.grad2(c.z, c.y) * c.rz
        # rdW^T = rdz^T x + dz^T rx, [width, in], transposed once at the end, as
        # JAX's own transpose rules lay it out: XLA:CPU ran that faster than
        # x^T rdz through plain views or backward's written-out copies
        # (``transposed``) (MNIST-sized hvp vs jax.jvp(jax.grad): 0.75x copies,
        # 0.95x views, 1.0x this). Stacking [rx; x] and [dz; rdz] into one
        # product per pair was slower (the copies cost more than the calls saved).
        rdWt = mm(rdz.T, c.x)
        if c.rx is not None:
            rdWt = rdWt + mm(dz.T, c.rx)
        W = params["W"]
        return {"W": rdWt.T, "b": jnp.sum(rdz, axis=0)}, mm(dz, W.T), mm(rdz, W.T) + mm(dz, v["W"].T)

    def sq_norms(params, cache, dy, coef):
        dy = _undrop(cache.mask, dy)
        dz = dy if act is None else dy * act.grad(cache.z, cache.y)  # [n, width]
        dz2 = jnp.sum(dz * dz, axis=1)  # [n]
        sq = jnp.sum(cache.x * cache.x, axis=1) * dz2 + dz2
        if coef:
            W = params["W"]
            sq = sq + 2 * coef * jnp.sum(mm(cache.x, W) * dz, axis=1) + coef * coef * jnp.sum(W * W)
        return sq

    name = f"dense({width}{'' if act is None else ', ' + act.name}{f', dropout={rate:g}' if rate else ''})"
    desc = spec("dense", width=width, activation=None if act is None else act.name, dropout=rate,
                init=ini._asdict(), bias_init=bias_init, precision=precision)
    return Layer(name, init_fn, forward, backward, desc, random=rate > 0, smooth=act is None or act.smooth,
                 jvp=_jvp_of(rforward), sq_norms=sq_norms, rforward=rforward, rbackward=rbackward,
                 dropout_key=rate > 0)


class DenseRCache(NamedTuple):
    x: Array  # [n, in]: the layer's input
    rx: Array | None  # [n, in]: its tangent; None: zero (the network's input)
    z: Array  # [n, width]: x W + b
    y: Array  # [n, width]: f(z) (z without an activation)
    rz: Array  # [n, width]: the tangent of z


def _jvp_of(rforward):
    """A layer's ``jvp`` from its ``rforward``: the same tangent; XLA drops the unused rcache."""
    def jvp(params, x, dparams, dx):
        y, dy, _ = rforward(params, x, dparams, dx)
        return y, dy
    return jvp


def need_grad2(act: Activation):
    """``act.grad2``, or a clear error: the hand-derived ``net.hvp`` needs the second derivative."""
    if act.grad2 is None:
        raise InvalidType(f"activation {act.name!r} has no grad2: net.hvp (the hand-derived Hessian-vector "
                          "product) needs its second derivative; give Activation(name, fn, grad, "
                          "grad2=lambda z, y: d2y/dz2).")
    return act.grad2


def _drop(rate: float, key, x):
    """``(x * mask, mask)`` for inverted dropout, or ``(x, None)`` without a key or a rate.

    A ``DropoutKey`` brings its own keep probability, which replaces ``rate``.
    """
    if isinstance(key, DropoutKey):
        key, keep = key.key, key.keep
        mask = jax.random.bernoulli(key, keep, x.shape).astype(x.dtype) / keep.astype(x.dtype)
        return x * mask, mask
    if key is None or rate == 0.0:
        return x, None
    keep = 1.0 - rate
    # Inverted dropout: kept units are scaled by 1/keep at train time, so
    # evaluation (no mask) needs no rescaling.
    mask = jax.random.bernoulli(key, keep, x.shape).astype(x.dtype) / keep
    return x * mask, mask


def _undrop(mask, dy):
    return dy if mask is None else dy * mask


# ------------------------------------------------------------------ activation


def activation(a) -> Layer:
    """An elementwise activation as a layer: ``y = f(x)``, ``dx = dy * f'(x)``; params ``{}``.

    Forward mode: ``dy = f'(x) * dx``. No parameters: per-example norms are 0.
    R-backward (``dx = dy * f'(x)``; x moves by rx, dy by rdy):
    ``rdx = rdy * f'(x) + dy * f''(x) * rx``, f'' the activation's ``grad2``.

    Args:
      a: a name or an ``Activation`` value.
    """
    return _activation(activations.hidden(a))


@functools.lru_cache(maxsize=256)
def _activation(act: Activation) -> Layer:

    def init(key, in_width, dtype):
        del key, dtype
        return in_width, {}

    def forward(params, x, *, key=None):
        del params, key
        y = act.fn(x)
        return y, (x, y)

    def backward(params, cache, dy):
        del params
        x, y = cache
        return {}, dy * act.grad(x, y)

    def rforward(params, x, v, rx):
        del params, v
        y = act.fn(x)
        rx = jnp.zeros_like(x) if rx is None else rx
        return y, act.grad(x, y) * rx, (x, y, rx)

    def rbackward(params, v, cache, dy, rdy):
        del params, v
        x, y, rx = cache
        f1 = act.grad(x, y)
        if need_grad2(act) is activations.zero_grad2:  # piecewise linear: no f'' term
            return {}, dy * f1, rdy * f1
        return {}, dy * f1, rdy * f1 + dy * act.grad2(x, y) * rx

    return Layer(act.name, init, forward, backward, spec("activation", activation=act.name),
                 smooth=act.smooth, jvp=_jvp_of(rforward), sq_norms=_no_params_sq_norms,
                 rforward=rforward, rbackward=rbackward)


# ------------------------------------------------------------------ dropout


def dropout(rate: float) -> Layer:
    """Inverted dropout: each unit is dropped with probability ``rate`` at train time.

    With a key: ``y = x * mask``, ``mask = bernoulli(1 - rate) / (1 - rate)``,
    so evaluation (no key) is the identity and needs no rescaling;
    ``dx = dy * mask``. Without a key: ``y = x``, ``dx = dy``. Params ``{}``.
    Forward mode is deterministic (evaluation): ``dy = dx``; so is the
    R-backward: ``dx = dy``, ``rdx = rdy``.

    Args:
      rate: the probability of DROPPING a unit, in [0, 1).
    """
    return _dropout(_checks.probability("rate", rate))


@functools.lru_cache(maxsize=256)
def _dropout(rate: float) -> Layer:
    def init(key, in_width, dtype):
        del key, dtype
        return in_width, {}

    def forward(params, x, *, key=None):
        del params
        return _drop(rate, key, x)

    def backward(params, mask, dy):
        del params
        return {}, _undrop(mask, dy)

    def rforward(params, x, v, rx):
        del params, v
        return x, jnp.zeros_like(x) if rx is None else rx, None

    def rbackward(params, v, rcache, dy, rdy):
        del params, v, rcache
        return {}, dy, rdy

    return Layer(f"dropout({rate:g})", init, forward, backward, spec("dropout", rate=rate),
                 random=rate > 0, smooth=True, jvp=_jvp_of(rforward), sq_norms=_no_params_sq_norms,
                 rforward=rforward, rbackward=rbackward, dropout_key=rate > 0)


def _no_params_sq_norms(params, cache, dy, coef):
    del params, cache, coef
    return jnp.zeros(dy.shape[:1], dy.dtype)  # no parameters, nothing to add


# ------------------------------------------------------------------ layer norm


class LayerNormCache(NamedTuple):
    xhat: Array  # [n, d]: (x - mean) / sqrt(var + eps)
    inv: Array  # [n, 1]: 1 / sqrt(var + eps)


def layer_norm(eps: float = 1e-5) -> Layer:
    """Layer normalisation per sample over the feature axis (Ba, Kiros & Hinton 2016).

    Forward, per row (d features, biased variance)::

        mu = mean(x)    var = mean((x - mu)^2)    xhat = (x - mu) / sqrt(var + eps)
        y = gain * xhat + bias

    Backward, derived by hand (per row, with g = dy * gain), never forming
    the [d, d] Jacobian::

        dgain = sum_rows dy * xhat      dbias = sum_rows dy
        dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)

    Forward mode, per row (tangents dx, dgain, dbias): with dxc = dx - mean(dx),
    d var = 2 mean(xc dxc) and d (var + eps)^(-1/2) = -inv^3 mean(xc dxc), so::

        dxhat = inv * (dxc - xhat * mean(xhat * dxc))
        dy = dgain * xhat + gain * dxhat + dbias

    R-backward, per row (params move by v = (vgain, vbias), x by rx, dy by
    rdy): with a = mean(xhat * rxc), rinv = -inv^2 a and rxhat = dxhat
    above; writing dx = inv * u, rdx = rinv * u + inv * ru = inv * ru - a inv dx::

        rg = rdy * gain + dy * vgain
        ru = rg - mean(rg) - rxhat * mean(g * xhat) - xhat * mean(rg * xhat + g * rxhat)
        rdgain = sum_rows (rdy * xhat + dy * rxhat)      rdbias = sum_rows rdy

    Params ``{"gain": [d], "bias": [d]}``, initialised to ones and zeros; the
    network's L2 penalty does not touch them.

    Args:
      eps: added to the variance, > 0.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise InvalidArgument(f"eps must be a positive finite number; got {eps!r}.")
    return _layer_norm(float(eps))


@functools.lru_cache(maxsize=256)
def _layer_norm(eps: float) -> Layer:

    def init(key, in_width, dtype):
        del key
        return in_width, {"gain": jnp.ones((in_width,), dtype), "bias": jnp.zeros((in_width,), dtype)}

    def forward(params, x, *, key=None):
        del key
        mu = jnp.mean(x, axis=-1, keepdims=True)  # [n, 1]
        xc = x - mu
        inv = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)  # [n, 1]
        xhat = xc * inv
        return xhat * params["gain"][None, :] + params["bias"][None, :], LayerNormCache(xhat, inv)

    def backward(params, cache, dy):
        xhat, inv = cache
        g = dy * params["gain"][None, :]
        dx = inv * (g - jnp.mean(g, axis=-1, keepdims=True)
                    - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
        return {"gain": jnp.sum(dy * xhat, axis=0), "bias": jnp.sum(dy, axis=0)}, dx

    def rforward(params, x, v, rx):
        y, (xhat, inv) = forward(params, x)
        rx = jnp.zeros_like(x) if rx is None else rx
        rxc = rx - jnp.mean(rx, axis=-1, keepdims=True)
        a = jnp.mean(xhat * rxc, axis=-1, keepdims=True)  # [n, 1]: R{inv} = -inv^2 a
        rxhat = inv * (rxc - xhat * a)
        ry = v["gain"][None, :] * xhat + params["gain"][None, :] * rxhat + v["bias"][None, :]
        return y, ry, LayerNormRCache(xhat, inv, rxhat, a)

    def rbackward(params, v, c, dy, rdy):
        gain = params["gain"][None, :]
        g, rg = dy * gain, rdy * gain + dy * v["gain"][None, :]
        mgx = jnp.mean(g * c.xhat, axis=-1, keepdims=True)
        dx = c.inv * (g - jnp.mean(g, axis=-1, keepdims=True) - c.xhat * mgx)
        ru = (rg - jnp.mean(rg, axis=-1, keepdims=True) - c.rxhat * mgx
              - c.xhat * jnp.mean(rg * c.xhat + g * c.rxhat, axis=-1, keepdims=True))
        rdx = c.inv * ru - c.a * c.inv * dx
        return ({"gain": jnp.sum(rdy * c.xhat + dy * c.rxhat, axis=0), "bias": jnp.sum(rdy, axis=0)},
                dx, rdx)

    def sq_norms(params, cache, dy, coef):
        del params, coef  # no "W" leaf: L2 does not touch gain and bias
        gain = jnp.sum((dy * cache.xhat) ** 2, axis=1)  # row i's dgain is dy_i * xhat_i
        return gain + jnp.sum(dy * dy, axis=1)

    return Layer("layer_norm", init, forward, backward, spec("layer_norm", eps=eps), smooth=True,
                 jvp=_jvp_of(rforward), sq_norms=sq_norms, rforward=rforward, rbackward=rbackward)


class LayerNormRCache(NamedTuple):
    xhat: Array  # [n, d]
    inv: Array  # [n, 1]
    rxhat: Array  # [n, d]: the tangent of xhat
    a: Array  # [n, 1]: mean(xhat * rxc); the tangent of inv is -inv^2 a


# ------------------------------------------------------------------ composition


def check_layers(layers, where: str = "layers") -> tuple[Layer, ...]:
    """A non-empty sequence of ``Layer`` values, as a tuple; a clear error otherwise."""
    if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)) or not layers:
        raise InvalidType(f"{where} must be a non-empty list of Layer values; got {layers!r}.")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise InvalidType(f"{where}[{i}] must be a Layer (funcnn.layers.dense(...), or your own "
                            f"Layer(name, init, forward, backward, spec)); got {type(layer).__name__}.")
        for f in ("init", "forward", "backward"):
            if not callable(getattr(layer, f)):
                raise InvalidType(f"{where}[{i}] ({layer.name}): {f} must be a function.")
        if (layer.rforward is None) != (layer.rbackward is None):
            raise InvalidType(f"{where}[{i}] ({layer.name}): rforward and rbackward come as a pair (the "
                              "rcache of one is the input of the other); give both or neither.")
        try:
            hash(layer.spec)
            json.dumps(spec_to_json(layer.spec), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidType(f"{where}[{i}] ({layer.name}): spec must be hashable and JSON-able, e.g. "
                            f"funcnn.layers.spec({layer.name!r}, k=2); {e}.") from None
    return tuple(layers)


def spec_to_json(s):
    """A layer's spec as JSON (``Spec.to_json``; any other JSON value as it is)."""
    return s.to_json() if isinstance(s, Spec) else _thaw(s)


def chain_init(layers, key, in_width: int, dtype, where: str = "layers"):
    """``(out_width, [params per layer])``: each layer initialised from its own split of ``key``."""
    keys = jax.random.split(key, len(layers))
    params, width = [], in_width
    for i, (layer, k) in enumerate(zip(layers, keys)):
        out = layer.init(k, width, dtype)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise InvalidType(f"{where}[{i}] ({layer.name}): init must return (out_width, params); got {out!r}.")
        width = _checks.positive_int(f"{where}[{i}] ({layer.name}) out_width", out[0])
        params.append(out[1])
    return width, params


def chain_forward(layers, params, x, key):
    """``(y, caches)`` through every layer; random layers get ``split(key, how many)`` in order.

    A ``DropoutKey`` is split the same way, each part keeping its ``keep``.
    """
    n_random = sum(layer.random for layer in layers)
    keys = None
    if isinstance(key, DropoutKey) and n_random:
        keys = iter([DropoutKey(k, key.keep) for k in jax.random.split(key.key, n_random)])
    elif key is not None and n_random:
        keys = iter(jax.random.split(key, n_random))
    caches = []
    for layer, p in zip(layers, params):
        x, c = layer.forward(p, x, key=next(keys) if keys is not None and layer.random else None)
        caches.append(c)
    return x, tuple(caches)


def chain_backward(layers, params, caches, dy):
    """``(dparams per layer, dx)``: each layer's backward from the last to the first."""
    grads = [None] * len(layers)
    for i in reversed(range(len(layers))):
        grads[i], dy = layers[i].backward(params[i], caches[i], dy)
    return grads, dy


def _need_jvp(layer: Layer) -> Callable[..., tuple]:
    if layer.jvp is None:
        raise TypeError(f"layer {layer.name!r} has no jvp rule: forward mode (net.jvp, gnvp, loss_manual_jvp, "
                        "hessian_free) needs Layer(..., jvp=lambda params, x, dparams, dx: (y, dy)).")
    return layer.jvp


def chain_jvp(layers, params, x, dparams, dx):
    """``(y, dy)`` through every layer's forward-mode rule, in order (deterministic)."""
    for layer, p, dp in zip(layers, params, dparams):
        x, dx = _need_jvp(layer)(p, x, dp, dx)
    return x, dx


def layer_rforward(layer: Layer, params, x, v, rx):
    """``(y, ry, rcache)`` by ``layer.rforward`` or, without one, by ``jax.jvp`` of the layer's forward.

    The fallback's rcache is ``(cache, its tangent)``, for ``layer_rbackward``'s
    fallback: JAX's forward mode over the layer's own backward. Only the layers
    without the pair are differentiated automatically.
    """
    if layer.rforward is not None:
        return layer.rforward(params, x, v, rx)
    rx = jnp.zeros_like(x) if rx is None else rx
    (y, cache), (ry, rcache) = jax.jvp(lambda p, h: layer.forward(p, h), (params, x), (v, rx))
    return y, ry, (cache, rcache)


def layer_rbackward(layer: Layer, params, v, rcache, dy, rdy):
    """``(rdparams, dx, rdx)`` by ``layer.rbackward`` or ``jax.jvp`` of its backward (see ``layer_rforward``)."""
    if layer.rbackward is not None:
        return layer.rbackward(params, v, rcache, dy, rdy)
    cache, rc = rcache
    (_, dx), (rg, rdx) = jax.jvp(lambda p, c, d: layer.backward(p, c, d), (params, cache, dy), (v, rc, rdy))
    return rg, dx, rdx


def chain_rforward(layers, params, x, v, rx):
    """``(y, ry, rcaches)``: the R-forward pass through every layer, in order (deterministic)."""
    rcaches = []
    for layer, p, vp in zip(layers, params, v):
        x, rx, c = layer_rforward(layer, p, x, vp, rx)
        rcaches.append(c)
    return x, rx, tuple(rcaches)


def chain_rbackward(layers, params, v, rcaches, dy, rdy):
    """``(rdparams per layer, dx, rdx)``: the R-backward pass from the last layer to the first."""
    rgrads = [None] * len(layers)
    for i in reversed(range(len(layers))):
        rgrads[i], dy, rdy = layer_rbackward(layers[i], params[i], v[i], rcaches[i], dy, rdy)
    return rgrads, dy, rdy


def layer_sq_norms(layer: Layer, params, cache, dy, coef):
    """``[n]``: ``||dparams_i + coef * W||^2`` per row i, by ``layer.sq_norms`` or, without one,
    by the layer's backward vmapped over rows (which forms each row's gradient, one layer at a time)."""
    if layer.sq_norms is not None:
        return layer.sq_norms(params, cache, dy, coef)

    def one(c, d):
        g = layer.backward(params, jax.tree.map(lambda a: a[None], c), d[None])[0]
        if coef:
            g = jax.tree_util.tree_map_with_path(
                lambda path, a, p: a + coef * p if path and getattr(path[-1], "key", None) == "W" else a,
                g, params)
        return sum(jnp.sum(a * a) for a in jax.tree.leaves(g)) + jnp.zeros((), dy.dtype)

    return jax.vmap(one)(cache, dy)


def chain_sq_norms(layers, params, caches, dy, coef):
    """``(sq [n], dx)``: per-row squared gradient norms summed over the layers, from the last to the first."""
    sq = jnp.zeros(dy.shape[:1], dy.dtype)
    for i in reversed(range(len(layers))):
        sq = sq + layer_sq_norms(layers[i], params[i], caches[i], dy, coef)
        dy = layers[i].backward(params[i], caches[i], dy)[1]  # only dx is used: XLA drops the unused dparams
    return sq, dy


@functools.lru_cache(maxsize=256)
def _residual(inner: tuple) -> Layer:
    def init(key, in_width, dtype):
        width, params = chain_init(inner, key, in_width, dtype, where="residual")
        if width != in_width:
            raise InvalidArgument(f"residual: the inner layers map width {in_width} to {width}; a residual "
                             "block x + inner(x) must keep the width.")
        return width, params

    def forward(params, x, *, key=None):
        h, caches = chain_forward(inner, params, x, key)
        return x + h, caches

    def backward(params, caches, dy):
        grads, dx = chain_backward(inner, params, caches, dy)
        return grads, dy + dx  # the skip path passes dy through unchanged

    def jvp(params, x, dparams, dx):
        h, dh = chain_jvp(inner, params, x, dparams, dx)
        return x + h, dx + dh

    def rforward(params, x, v, rx):
        h, rh, rcaches = chain_rforward(inner, params, x, v, rx)
        return x + h, rh if rx is None else rx + rh, rcaches

    def rbackward(params, v, rcaches, dy, rdy):
        rgrads, dx, rdx = chain_rbackward(inner, params, v, rcaches, dy, rdy)
        return rgrads, dy + dx, rdy + rdx  # the skip path passes dy and its tangent through

    def sq_norms(params, caches, dy, coef):
        return chain_sq_norms(inner, params, caches, dy, coef)[0]

    name = "residual(" + ", ".join(layer.name for layer in inner) + ")"
    desc = spec("residual", inner=tuple(layer.spec for layer in inner))
    # jvp always: chain_jvp's error names the inner layer that lacks a rule.
    random = any(layer.random for layer in inner)
    return Layer(name, init, forward, backward, desc, random=random,
                 smooth=all(layer.smooth for layer in inner), jvp=jvp, sq_norms=sq_norms,
                 rforward=rforward, rbackward=rbackward,
                 dropout_key=random and all(layer.dropout_key for layer in inner if layer.random))


def residual(*inner: Layer) -> Layer:
    """A residual block ``y = x + inner(x)``, where ``inner`` is the layers in sequence.

    Backward: ``dx = dy + dx_inner`` (the skip path passes ``dy`` through);
    forward mode: ``dy = dx + dh_inner``; R-backward: ``rdx = rdy + rdx_inner``
    (an inner layer without the R pair falls back to ``jax.jvp`` alone);
    the inner layers' gradients come from their own backwards. Params: the
    list of the inner layers' params. The inner layers must keep the width
    (checked when the network is built).

    Raises:
      TypeError: an argument that is not a ``Layer``.
    """
    return _residual(check_layers(inner, "residual"))


# ------------------------------------------------------------------ rebuilding from specs


def _dense_from(s: Spec, custom) -> Layer:
    act = s.get("activation")
    ini = s.get("init", "xavier_normal")
    ini = Initializer(ini.name, ini.get("epsilon")) if isinstance(ini, Spec) else ini
    return dense(s.get("width"), None if act is None else activations.hidden(act, custom=custom),
                 dropout=s.get("dropout", 0.0), init=ini, bias_init=s.get("bias_init", "zeros"),
                 precision=s.get("precision", "default"))


BUILDERS: dict[str, Callable[[Spec, tuple], Layer]] = {
    "dense": _dense_from,
    "activation": lambda s, custom: activation(activations.hidden(s.get("activation"), custom=custom)),
    "dropout": lambda s, custom: dropout(s.get("rate")),
    "layer_norm": lambda s, custom: layer_norm(s.get("eps", 1e-5)),
    "residual": lambda s, custom: residual(*(from_spec(i, custom=custom) for i in s.get("inner", ()))),
}


def from_spec(s, *, custom=()) -> Layer:
    """The layer a spec describes: a built-in rebuilt, or the user's ``Layer`` in ``custom`` with that spec.

    Args:
      s: a ``Spec`` or its JSON form.
      custom: users' pieces (``Layer`` values, and the ``Activation``s their
        specs or the built-ins' name).

    Raises:
      ValueError: a spec that names no built-in layer and matches no layer in
        ``custom``; the message names the piece and says to pass it with ``custom=``.
    """
    s = s if isinstance(s, Spec) else spec_from_json(s)
    for c in custom:
        if isinstance(c, Layer) and spec_to_json(c.spec) == s.to_json():
            return c
    if s.name in BUILDERS:
        try:
            return BUILDERS[s.name](s, custom)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"layer spec {s.to_json()} cannot be rebuilt: {e}") from e
    same_name = [c for c in custom if isinstance(c, Layer) and getattr(c.spec, "name", None) == s.name]
    hint = (f" The custom layer(s) named {s.name!r} given have spec(s) "
            f"{[spec_to_json(c.spec) for c in same_name]}, not this one." if same_name else "")
    raise InvalidArgument(f"layer {s.to_json()} is not a built-in layer ({', '.join(BUILDERS)}): pass your "
                     f"Layer value with custom=[...].{hint}")
