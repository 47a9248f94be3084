"""Training with hand-derived gradients and with jax.grad: how far apart do the runs drift?

Trains the same network from the same key twice on the bundled digits, step
for step on the same minibatches: once with the hand-derived backprop
(``funcnn.train.make_train_step(net, opt, "manual")``) and once with automatic
differentiation (``"autodiff"``: ``jax.value_and_grad(net.loss)``), in float32
and in float64. After every step it measures

* ``max_abs``: the largest absolute parameter difference over all leaves,
  ``max |theta_manual - theta_autodiff|``;
* ``rel``: the same divided by ``max |theta_autodiff|`` (normwise relative);
* ``loss_diff``: ``|loss_manual - loss_autodiff|`` of the step (the loss at the
  parameters before the update, on that step's minibatch).

The two gradients agree to rounding (see compare_gradients.py), so the runs
start apart by rounding error; what this shows is whether that difference stays
at rounding level or is amplified by training (a ReLU unit whose pre-activation
crosses zero differently in the two runs, say).

    python scripts/gradient_parity.py                     # 500 steps, SGD 0.1, 64-64-10 relu
    python scripts/gradient_parity.py --steps 2000 --optimizer adam --lr 1e-3

Writes ``gradient_parity.csv`` (one row per dtype and step) and (with
matplotlib) ``gradient_parity.png`` under ``--out`` (default
``runs/gradient_parity/``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import funcnn
from funcnn import data, optim, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_common.py, however this file is loaded
from _common import print_plot_written, write_csv  # noqa: E402

FIELDS = ("dtype", "step", "max_abs_param_diff", "rel_param_diff", "loss_manual", "loss_autodiff", "abs_loss_diff")
OPTIMIZERS = {"sgd": optim.sgd, "adam": optim.adam}


@jax.jit
def param_difference(a, b):
    """``(max |a - b|, max |a - b| / max |b|)`` over all leaves of two parameter pytrees."""
    diff = jnp.max(jnp.stack([jnp.max(jnp.abs(u - v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))]))
    scale = jnp.max(jnp.stack([jnp.max(jnp.abs(v)) for v in jax.tree.leaves(b)]))
    return diff, diff / scale


def batch_indices(n: int, batch: int, steps: int, seed: int) -> np.ndarray:
    """``[steps, batch]`` sample indices: epochs of fresh permutations, full batches only."""
    rng = np.random.default_rng(seed)
    per_epoch = n // batch
    epochs = -(-steps // per_epoch)
    idx = np.concatenate([rng.permutation(n)[: per_epoch * batch].reshape(per_epoch, batch)
                          for _ in range(epochs)])
    return idx[:steps]


def run(net, opt, dtype: str, steps: int, batch: int, seed: int) -> list[dict]:
    """Both runs side by side in one dtype; one record per step."""
    x, y = data.load_digits(dtype=dtype)  # x [1797, 64] in [0, 1], y [1797] int32
    idx = jnp.asarray(batch_indices(x.shape[0], batch, steps, seed))
    step_manual = train.make_train_step(net, opt, "manual")
    step_auto = train.make_train_step(net, opt, "autodiff")
    key = jax.random.key(seed)
    # Two separate states drawn from the same key: the steps donate their input.
    s_manual = train.init_state(net, opt, key=key, dtype=dtype)
    s_auto = train.init_state(net, opt, key=key, dtype=dtype)
    out = []
    for i in range(steps):
        xb, yb = x[idx[i]], y[idx[i]]  # [batch, 64], [batch]
        s_manual, m_manual = step_manual(s_manual, xb, yb)
        s_auto, m_auto = step_auto(s_auto, xb, yb)
        # Stays on device: the loop only enqueues work; one fetch at the end.
        out.append((param_difference(s_manual.params, s_auto.params), m_manual["loss"], m_auto["loss"]))
    out = jax.device_get(out)
    return [{"dtype": dtype, "step": i + 1, "max_abs_param_diff": float(d[0]), "rel_param_diff": float(d[1]),
             "loss_manual": float(lm), "loss_autodiff": float(la), "abs_loss_diff": abs(float(lm) - float(la))}
            for i, (d, lm, la) in enumerate(out)]


def checkpoints(steps: int) -> list[int]:
    return sorted({s for s in (1, 10, 100, steps) if s <= steps})


def print_table(rows, steps: int) -> None:
    head = (f"{'dtype':<8} {'step':>6} {'max|dtheta|':>12} {'relative':>10} {'loss manual':>16} "
            f"{'loss autodiff':>16} {'|dloss|':>10}")
    print(head)
    print("-" * len(head))
    keep = set(checkpoints(steps))
    for r in rows:
        if r["step"] in keep:
            print(f"{r['dtype']:<8} {r['step']:6d} {r['max_abs_param_diff']:12.3e} {r['rel_param_diff']:10.3e} "
                  f"{r['loss_manual']:16.10f} {r['loss_autodiff']:16.10f} {r['abs_loss_diff']:10.3e}")
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        sel = [r for r in rows if r["dtype"] == dtype]
        worst = max(sel, key=lambda r: r["max_abs_param_diff"])
        eps = float(np.finfo(dtype).eps)
        identical = sum(r["max_abs_param_diff"] == 0 for r in sel)
        print(f"{dtype}: largest parameter difference {worst['max_abs_param_diff']:.3e} at step {worst['step']} "
              f"(relative {worst['rel_param_diff']:.1e} = {worst['rel_param_diff'] / eps:.0f} eps); "
              f"parameters bit-identical after {identical} of {len(sel)} steps")


def plot(rows, out: Path):
    """Parameter and loss differences per step, log scale; None without matplotlib."""
    try:
        import matplotlib  # noqa: F401

        from funcnn.plots import plot_curves
    except ImportError:
        return None
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    steps = [r["step"] for r in rows if r["dtype"] == dtypes[0]]
    series = {}
    for dtype in dtypes:
        sel = [r for r in rows if r["dtype"] == dtype]
        series[f"max |dtheta| {dtype}"] = [r["max_abs_param_diff"] for r in sel]
        series[f"|dloss| {dtype}"] = [r["abs_loss_diff"] for r in sel]
    return plot_curves(steps, series, out / "gradient_parity.png", xlabel="step", logy=True,
                       ylabel="manual vs autodiff difference (0 not drawn)",
                       title="same key, same batches: hand-derived vs jax.grad training")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500, help="optimizer steps per run (default: 500)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 64, 10], metavar="N",
                    help="layer widths, input 64 and output 10 for digits (default: 64 64 10)")
    ap.add_argument("--hidden", default="relu", help="hidden activation (default: relu)")
    ap.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd", help="optimizer (default: sgd)")
    ap.add_argument("--lr", type=float, default=0.1, help="learning rate (default: 0.1)")
    ap.add_argument("--batch", type=int, default=64, help="minibatch size (default: 64)")
    ap.add_argument("--dtypes", nargs="+", choices=("float32", "float64"), default=["float32", "float64"],
                    help="dtypes to run (default: both)")
    ap.add_argument("--seed", type=int, default=0, help="key of the initialisation and the batch order (default: 0)")
    ap.add_argument("--out", type=Path, default=Path("runs/gradient_parity"),
                    help="folder for gradient_parity.csv and .png (default: runs/gradient_parity/)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1; got {args.steps}")
    if not 1 <= args.batch <= 1797:
        ap.error(f"--batch must be in [1, 1797] (the digits set); got {args.batch}")
    if len(args.sizes) < 2 or args.sizes[0] != 64 or args.sizes[-1] != 10:
        ap.error(f"--sizes must start with 64 and end with 10 for digits; got {args.sizes}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # for the float64 run; float32 arrays stay float32
    net = funcnn.mlp(args.sizes, hidden=args.hidden)
    opt = OPTIMIZERS[args.optimizer](args.lr)
    print(f"device: {jax.devices()[0]}; digits, {'-'.join(map(str, args.sizes))} {args.hidden}, softmax "
          f"cross-entropy, {args.optimizer} lr {args.lr:g}, batch {args.batch}, {args.steps} steps, seed {args.seed}")
    rows = []
    for dtype in args.dtypes:
        rows += run(net, opt, dtype, args.steps, args.batch, args.seed)
    print_table(rows, args.steps)
    path = write_csv(rows, args.out / "gradient_parity.csv", FIELDS, float_fmt=".9e")
    print(f"wrote {path}")
    png = plot(rows, args.out)
    print_plot_written(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
