"""``funcnn explain``: one forward and one backward pass of a small network, number by number.

Everything printed comes from funcnn's own pieces: ``net.forward`` (its
``Cache`` holds each layer's ``x``, ``z = x W + b`` and ``f(z)``), each
layer's hand-derived ``backward`` for ``dL/da`` between layers and
``net.backward`` for the gradients, the loss from ``net.loss``. This module
formats; ``explain_text`` returns the text and ``cmd_explain`` prints it.

The notation is the tutorials': W has one row per unit (``w`` of unit j is
row j, so funcnn's ``[fan_in, fan_out]`` ``W`` is shown transposed), ``z = w . x + b``,
``a = f(z)``, one example at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import funcnn
from funcnn import losses
from funcnn.errors import InvalidArgument
from funcnn.layers import DenseCache

MAX_UNITS = 10  # more numbers than this per layer stop being readable


class Example(NamedTuple):
    """A published worked network: weights in the tutorials' layout (one row per unit)."""

    sizes: tuple
    hidden: str
    output: str
    loss: str
    layers: tuple  # ((W rows [fan_out][fan_in], b [fan_out]), ...)
    x: tuple
    t: tuple  # the target; the 2-2-2 example publishes none, so one is chosen (see its note)
    learning_rate: float
    note: str


# The tutorials' two networks, as in scripts/reproduce_examples.py (published values in tests/test_examples.py).
EXAMPLES = {
    "sigmoid-2-2-2": Example(
        (2, 2, 2), "sigmoid", "sigmoid", "mse",
        (([[0.3, -0.4], [0.2, 0.6]], [0.25, 0.45]), ([[0.7, 0.5], [-0.3, -0.1]], [0.15, 0.35])),
        (2.0, 3.0), (1.0, 0.0), 0.5,
        "the forward pass is the published one; the target t = (1, 0) and the step are ours, to show a backward pass"),
    "relu-2-3-1": Example(
        (2, 3, 1), "relu", "identity", "mse",
        (([[1.0, 2.0], [-3.0, 4.0], [1.0, -1.0]], [1.0, 2.0, 0.0]), ([[1.0, 2.0, 3.0]], [1.0])),
        (1.0, 2.0), (3.0,), 0.01,
        "the published 2-3-1 ReLU example: prediction 21, loss 162 (mse with the 1/2 convention)"),
}


def num(v) -> str:
    """A number as the shortest decimal within 8 units in the last place of its float64 value.

    That hides the rounding noise of float64 arithmetic (0.82, not 0.8200000000000001)
    and keeps 15 or more significant digits of every other number.
    """
    v = float(v)
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    room = 8 * float(np.spacing(abs(v)))
    return next(t for t in (f"{v:.{p}g}" for p in range(1, 18)) if abs(float(t) - v) <= room)


def vec(a) -> str:
    return "[" + ", ".join(num(v) for v in np.ravel(a)) + "]"


def mat(a) -> str:
    return "[" + ", ".join(vec(row) for row in np.asarray(a)) + "]"


def example_problem(name: str):
    """``(net, params, x [1, d], t [1, m], learning_rate, title, note)`` for a preset, in float64."""
    if name not in EXAMPLES:
        raise InvalidArgument(f"unknown --example {name!r}; the presets are {', '.join(EXAMPLES)}.")
    e = EXAMPLES[name]
    net = funcnn.mlp(list(e.sizes), hidden=e.hidden, output=e.output, loss=e.loss)
    params = [{"W": jnp.asarray(W, jnp.float64).T, "b": jnp.asarray(b, jnp.float64)} for W, b in e.layers]
    x, t = jnp.asarray([e.x], jnp.float64), jnp.asarray([e.t], jnp.float64)
    return net, params, x, t, e.learning_rate, f"--example {name}", e.note


def check_small(net) -> None:
    """Raises ValueError unless every layer is dense with at most MAX_UNITS units (inputs too)."""
    widths = [net.input_size]
    for layer in net.layers:
        if layer.spec.name != "dense":  # a layer kind, not a setting: only dense layers have w . x + b
            raise InvalidArgument(f"explain prints w . x + b per unit, so it needs dense layers only; this network "
                             f"has {layer.name}.")
        widths.append(dict(layer.spec.args)["width"])
    if max(widths) > MAX_UNITS:
        raise InvalidArgument(f"explain prints every number, so it is for small networks (at most {MAX_UNITS} units "
                         f"per layer); this one has widths {widths}. Try --example relu-2-3-1 or "
                         "configs/two_lines.toml.")


def _activation(layer) -> str:
    return dict(layer.spec.args).get("activation") or "identity"


def explain_text(net, params, x, t, learning_rate: float, *, title: str, note: str = "") -> str:
    """The forward pass, the loss, the backward pass and one gradient-descent step, as text.

    Args:
      net: a network of dense layers (``check_small``).
      params: its parameters (float64 for exact decimals).
      x: ``[1, input_size]`` one example; t: its target as the loss takes it (``[1, m]`` or ``[1]`` labels).
      learning_rate: the step ``W <- W - learning_rate * dL/dW``.

    Returns:
      The text (lines joined by newlines).
    """
    check_small(net)
    if x.shape[0] != 1:
        raise InvalidArgument(f"explain takes one example; got x of shape {tuple(x.shape)}.")
    z_out, y, cache = net.forward(params, x)
    loss = net.loss(params, x, t)
    dz = losses.get(net.criterion, net.output).dlogits(z_out, y, t)  # dL/dz of the last layer, [1, m]
    grads, _ = net.backward(params, cache, dz)
    dense = [c for c in cache.layers if isinstance(c, DenseCache)]
    L = len(net.layers)
    out = [f"funcnn explain {title}: a {'-'.join(str(w) for w in [net.input_size] + [c.z.shape[1] for c in dense])} "
           f"network, {net.output.name} output, {net.criterion.name} loss, one example"]
    if note:
        out.append(f"({note})")
    out += [f"x = {vec(x[0])}", f"t = {vec(t[0])}", "",
            "forward pass  (z = w . x + b, a = f(z); w is unit j's row of W)"]
    for k, (layer, c, p) in enumerate(zip(net.layers, dense, params, strict=True), start=1):
        act = net.output.name if k == L else _activation(layer)
        a_in = "x" if k == 1 else f"a{k - 1}"
        out.append(f"layer {k}: {c.x.shape[1]} -> {c.z.shape[1]}, W{k} = {mat(p['W'].T)}, b{k} = {vec(p['b'])}")
        for j in range(c.z.shape[1]):
            terms = " + ".join(f"({num(p['W'][i, j])})({num(c.x[0, i])})" for i in range(c.x.shape[1]))
            a = y[0, j] if k == L else c.y[0, j]
            name = "y" if k == L else f"a{k}"
            out.append(f"  z{k}[{j + 1}] = w{k}[{j + 1}] . {a_in} + b{k}[{j + 1}] = {terms} + ({num(p['b'][j])}) "
                       f"= {num(c.z[0, j])}    {name}[{j + 1}] = {act}({num(c.z[0, j])}) = {num(a)}")
    out += [f"y = {vec(y[0])}", f"loss L = {net.criterion.name}(y, t) = {num(loss)}", "",
            "backward pass  (dL/dW = dL/dz times the layer's input; dL/db = dL/dz for one example)"]
    dy = dz  # dL/da of the last layer: it has no activation of its own (the output's is in dz)
    for k in range(L, 0, -1):
        layer, c, g = net.layers[k - 1], dense[k - 1], grads[k - 1]
        if k == L:
            out.append(f"dL/dz{k} = dL/dy * {net.output.name}'(z{k}) = {vec(g['b'])}")
        else:
            out += [f"dL/da{k} = dL/dz{k + 1} . W{k + 1} = {vec(dy[0])}",
                    f"dL/dz{k} = dL/da{k} * {_activation(layer)}'(z{k}) = {vec(g['b'])}"]
        out += [f"dL/dW{k} = {mat(g['W'].T)}", f"dL/db{k} = {vec(g['b'])}"]
        _, dy = layer.backward(params[k - 1], c, dy)  # funcnn's own dx: dL/da_{k-1}, [1, in]
    new = jax.tree.map(lambda p, d: p - learning_rate * d, params, grads)
    lr = num(learning_rate)
    out += ["", f"one gradient-descent step  (W <- W - {lr} dL/dW, b <- b - {lr} dL/db)"]
    for k, p in enumerate(new, start=1):
        out.append(f"W{k} = {mat(p['W'].T)}    b{k} = {vec(p['b'])}")
    out.append(f"after the step: y' = {vec(net.apply(new, x)[0])}    loss L' = {num(net.loss(new, x, t))}")
    return "\n".join(out)


def problem_from_path(path: str, overrides):
    """``(net, params, x, t, lr, title, note)`` for a config (initial params, first training example)
    or a checkpoint (its params, the first test example of its run's split)."""
    from funcnn import checkpoint
    from funcnn.app import config as cfglib
    from funcnn.app import experiment

    p = Path(path)
    if p.suffix == ".toml":
        cfg = cfglib.load_config(path, ["training.dtype=float64", *overrides])  # exact decimals; --set wins
        split = experiment.load_split(cfg)
        net, opt = experiment.build(cfg, split.x_train.shape[0])
        params = experiment.initial_state(cfg, net, opt).params
        x, y, where = split.x_train[:1], split.y_train[:1], "the first training example, initial parameters"
        lr = cfg.optimizer.learning_rate
    else:
        if overrides:
            raise InvalidArgument("--set applies to a config, not to a checkpoint.")
        ckpt = checkpoint.load(path)
        if ckpt.config is None:
            raise InvalidArgument(f"{path} stores no config, so there is no example to explain.")
        cfg = cfglib.config_from_dict(ckpt.config)
        net, params = ckpt.net, ckpt.params
        check_small(net)
        split = experiment.load_split(cfg)
        x, y, where = split.x_test[:1], split.y_test[:1], "the first test example of the run's split"
        lr = cfg.optimizer.learning_rate
    check_small(net)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    t = experiment.targets(net, y)
    t = t.astype(jnp.float64) if jnp.issubdtype(t.dtype, jnp.floating) else t
    return (net, params, jnp.asarray(x, jnp.float64), t, lr, str(path),
            f"{where}; standardised inputs as trained" if cfg.data.standardize else where)


def cmd_explain(args) -> int:
    jax.config.update("jax_enable_x64", True)  # the tutorials' numbers are float64
    if (args.example is None) == (args.source is None):
        raise InvalidArgument("give either --example NAME (" + ", ".join(EXAMPLES) + ") or a CONFIG.toml / checkpoint.")
    problem = example_problem(args.example) if args.example else problem_from_path(args.source, args.set)
    net, params, x, t, lr, title, note = problem
    print(explain_text(net, params, x, t, lr if args.lr is None else args.lr, title=title, note=note))
    return 0


def register(sub) -> None:
    """Adds ``funcnn explain`` to the CLI's subparsers."""
    p = sub.add_parser("explain", help="print a small network's forward and backward pass number by number",
                       description="Print one forward pass (each unit's z = w . x + b and activation), the loss, "
                       "the backward pass (dL/dz, dL/dW, dL/db per layer) and one gradient-descent step, all "
                       "computed by funcnn's own forward/backward. For networks of at most "
                       f"{MAX_UNITS} units per layer.")
    p.add_argument("source", nargs="?", metavar="CONFIG_OR_CHECKPOINT",
                   help="a small config (first training example, initial parameters) or a checkpoint")
    p.add_argument("--example", metavar="NAME", help="a worked network from the tutorials: " + ", ".join(EXAMPLES))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--lr", type=float, help="the step's learning rate (default: the example's or the config's)")
    p.set_defaults(fn=cmd_explain)
