"""Plainly written reference networks for the tests: no funcnn code is used.

Everything here is the textbook formula in jnp, so that ``jax.grad`` of
``reference_loss`` is an independent reference for funcnn's hand-derived
backward pass.
"""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np

REF_ACT = {
    "identity": lambda z: z,
    "relu": lambda z: jnp.maximum(z, 0.0),
    "leaky_relu": lambda z: jnp.where(z > 0, z, 0.01 * z),
    "sigmoid": lambda z: 1.0 / (1.0 + jnp.exp(-z)),
    "tanh": lambda z: (jnp.exp(z) - jnp.exp(-z)) / (jnp.exp(z) + jnp.exp(-z)),
    "softplus": lambda z: jnp.log(1.0 + jnp.exp(z)),
    "elu": lambda z: jnp.where(z > 0, z, jnp.exp(z) - 1.0),
    "gelu": lambda z: 0.5 * z * (1.0 + jnp.tanh(float(np.sqrt(2.0 / np.pi)) * (z + 0.044715 * z**3))),
    "swish": lambda z: z / (1.0 + jnp.exp(-z)),
}
HIDDEN_NAMES = tuple(REF_ACT)
PAIRS = (
    ("identity", "mse"),
    ("sigmoid", "mse"),
    ("softmax", "mse"),
    ("softmax", "cross_entropy"),
    ("sigmoid", "binary_cross_entropy"),
)


def ref_output(name, z):
    if name == "identity":
        return z
    if name == "sigmoid":
        return 1.0 / (1.0 + jnp.exp(-z))
    e = jnp.exp(z - jnp.max(z, axis=1, keepdims=True))
    return e / jnp.sum(e, axis=1, keepdims=True)


def ref_data_loss(loss, out, y):
    """The mean data loss of outputs ``out`` [n, m] against targets ``y``, by the textbook formula."""
    n = out.shape[0]
    if loss == "mse":
        return jnp.sum((out - y) ** 2) / (2 * n)
    if loss == "cross_entropy":
        t = jax.nn.one_hot(y, out.shape[1], dtype=out.dtype) if jnp.issubdtype(y.dtype, jnp.integer) else y
        return -jnp.sum(t * jnp.log(out)) / n
    return -jnp.sum(y * jnp.log(out) + (1 - y) * jnp.log(1 - out)) / n


def reference_loss(params, x, y, *, hidden, output, loss, l2=0.0):
    """Mean data loss + l2/(2n) sum W^2 for the MLP h = f(h W + b), written plainly."""
    h = x
    for p in params[:-1]:
        h = REF_ACT[hidden](h @ p["W"] + p["b"][None, :])
    out = ref_output(output, h @ params[-1]["W"] + params[-1]["b"][None, :])
    n = x.shape[0]
    data = ref_data_loss(loss, out, y)
    return data + l2 / (2 * n) * sum(jnp.sum(p["W"] ** 2) for p in params)


def random_problem(sizes, output, loss, batch, dtype, seed=0, int_labels=True):
    """Random params (scale ~1/sqrt(fan_in)), inputs and matching targets (NumPy RNG)."""
    rng = np.random.default_rng(seed)
    params = [{"W": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), dtype),
               "b": jnp.asarray(0.1 * rng.normal(size=(b,)), dtype)}
              for a, b in zip(sizes[:-1], sizes[1:])]
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])), dtype)
    m = sizes[-1]
    if loss == "cross_entropy" and int_labels:
        y = jnp.asarray(rng.integers(0, m, size=batch), jnp.int32)
    elif loss == "cross_entropy":
        t = rng.random((batch, m))
        y = jnp.asarray(t / t.sum(1, keepdims=True), dtype)
    elif loss == "binary_cross_entropy":
        y = jnp.asarray(rng.integers(0, 2, size=(batch, m)), dtype)
    else:
        y = jnp.asarray(rng.normal(size=(batch, m)), dtype)
    return params, x, y


def normwise_rel_err(a, b):
    """max over leaves of max|a - b| / max|b| (0 when both are zero)."""
    worst = 0.0
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        err, scale = np.max(np.abs(u - v)), np.max(np.abs(v))
        worst = max(worst, err / scale if scale > 0 else (0.0 if err == 0 else np.inf))
    return worst


# Largest relative error seen by the gradient matrix, per dtype; conftest prints it.
OBSERVED = {}


def record(kind, dtype, err):
    key = (kind, str(jnp.dtype(dtype)))
    OBSERVED[key] = max(OBSERVED.get(key, 0.0), float(err))


@contextlib.contextmanager
def broken_derivative(name, wrong_grad):
    """Temporarily replaces hidden activation ``name``'s derivative with ``wrong_grad``.

    Networks built inside the block use the broken derivative in their manual
    backward; their forward pass (and so jax.grad of net.loss) is unchanged.
    funcnn caches networks by the activation *values* they hold, so networks
    built outside the block never see the broken one. Yields the broken value.
    """
    import funcnn

    acts = funcnn.activations.HIDDEN
    saved = acts[name]
    acts[name] = saved._replace(grad=wrong_grad)
    try:
        yield acts[name]
    finally:
        acts[name] = saved


# ----------------------------------------------------------- any network, written plainly
# An architecture is a list of ("dense", width, activation name or None),
# ("layer_norm", eps) and ("residual", [inner architecture]) entries; params
# are funcnn's (one entry per layer), read here with plain jnp only.


@contextlib.contextmanager
def compilations():
    """The seconds of every XLA compilation inside the ``with`` block, as a list (``jax.monitoring``)."""
    seconds: list = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            seconds.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seconds
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def ref_layer_norm(p, h, eps):
    mu = jnp.mean(h, axis=1, keepdims=True)
    var = jnp.mean((h - mu) ** 2, axis=1, keepdims=True)
    return (h - mu) / jnp.sqrt(var + eps) * p["gain"][None, :] + p["bias"][None, :]


def ref_forward(arch, params, h):
    for entry, p in zip(arch, params):
        kind = entry[0]
        if kind == "dense":
            h = h @ p["W"] + p["b"][None, :]
            if entry[2] is not None:
                h = REF_ACT[entry[2]](h)
        elif kind == "layer_norm":
            h = ref_layer_norm(p, h, entry[1])
        elif kind == "residual":
            h = h + ref_forward(entry[1], p, h)
        else:
            raise ValueError(kind)
    return h


def ref_weights(arch, params):
    out = []
    for entry, p in zip(arch, params):
        if entry[0] == "dense":
            out.append(p["W"])
        elif entry[0] == "residual":
            out += ref_weights(entry[1], p)
    return out


def reference_network_loss(arch, params, x, y, *, output, loss, l2=0.0):
    """Mean data loss + l2/(2n) sum of every dense W^2 for ``arch``, written plainly."""
    out = ref_output(output, ref_forward(arch, params, x))
    n = x.shape[0]
    data = ref_data_loss(loss, out, y)
    return data + l2 / (2 * n) * sum(jnp.sum(w ** 2) for w in ref_weights(arch, params))


def funcnn_layers(arch):
    """The funcnn layers for ``arch`` (the code under test is built from the same description)."""
    from funcnn import layers

    out = []
    for entry in arch:
        if entry[0] == "dense":
            out.append(layers.dense(entry[1], entry[2]))
        elif entry[0] == "layer_norm":
            out.append(layers.layer_norm(entry[1]))
        else:
            out.append(layers.residual(*funcnn_layers(entry[1])))
    return out
