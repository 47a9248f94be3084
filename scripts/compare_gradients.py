"""Hand-derived gradients against reverse mode, forward mode and finite differences, swept.

For every hidden activation x every (output, loss) pair of ``funcnn.losses.PAIRS``
x depth (0, 1, 3 hidden layers of width 16) x dtype (float32, float64), on
random data (seed 0, batch 32, 8 inputs, 3 outputs), this measures

* the worst normwise relative error over the parameter leaves,
  ``max_leaves max|manual - ref| / max|ref|``, of the hand-derived ``net.grad``
  against ``jax.grad(net.loss)`` (reverse), forward-mode JVPs (forward) and
  float64 central finite differences (finite_diff; entries at a ReLU/ELU kink
  are excluded and counted), all from ``funcnn.gradcheck`` at the same point;
* the median wall time of one gradient, jitted, warmed up and blocked on:
  the hand-derived ``net.grad``, ``jax.grad(net.loss)``, and ``jax.jacfwd`` of
  the loss over the flat parameter vector (``ravel_pytree``), which costs one
  forward pass per parameter and is here only as the third reference.

With no hidden layer the hidden activation does not enter the network, so depth
0 is run once per (output, loss, dtype), listed with hidden ``-``.

    python scripts/compare_gradients.py                  # full sweep (a few minutes on a CPU)
    python scripts/compare_gradients.py --quick          # 3 activations, depth 1 (~30 s on a CPU)
    python scripts/compare_gradients.py --out runs/grads --repeats 50

Writes ``compare_gradients.csv`` and (with matplotlib) ``compare_gradients.png``
under ``--out`` (default ``runs/compare_gradients/``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import funcnn
from funcnn import losses

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_common.py, however this file is loaded
from _common import median_time, print_plot_written, write_csv  # noqa: E402

ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "softplus", "elu", "gelu", "swish")
QUICK_ACTIVATIONS = ("relu", "tanh", "gelu")  # a kink, a saturating and a smooth non-monotone one
PAIRS = tuple((out, loss) for loss, outs in losses.PAIRS.items() for out in outs)
REFERENCES = ("reverse", "forward", "finite_diff")
METHODS = ("manual", "reverse", "jacfwd")
D_IN, D_OUT = 8, 3
FIELDS = ("hidden", "output", "loss", "depth", "sizes", "dtype", "params",
          "err_reverse", "err_forward", "err_finite_diff", "fd_excluded", "passed",
          "t_manual_us", "t_reverse_us", "t_jacfwd_us")


def make_data(output: str, loss: str, batch: int, dtype, seed: int):
    """Random inputs ``[batch, D_IN]`` and targets fitting (output, loss)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, D_IN))
    if loss == "cross_entropy":
        y = jnp.asarray(rng.integers(0, D_OUT, batch), jnp.int32)  # [batch] labels
    elif loss == "binary_cross_entropy":
        y = jnp.asarray(rng.integers(0, 2, (batch, D_OUT)), dtype)  # [batch, m] 0/1
    elif output == "softmax":
        y = jnp.asarray(np.eye(D_OUT)[rng.integers(0, D_OUT, batch)], dtype)  # one-hot rows
    elif output == "sigmoid":
        y = jnp.asarray(rng.uniform(size=(batch, D_OUT)), dtype)  # targets in (0, 1)
    else:
        y = jnp.asarray(rng.normal(size=(batch, D_OUT)), dtype)
    return jnp.asarray(x, dtype), y


def run_case(hidden, output, loss, depth, dtype, *, width, batch, repeats, seed) -> dict:
    """One configuration: errors against the three references and the three timings."""
    sizes = [D_IN] + [width] * depth + [D_OUT]
    net = funcnn.mlp(sizes, hidden=hidden if depth else "identity", output=output, loss=loss)
    params = net.init(jax.random.key(seed), dtype=dtype)
    x, y = make_data(output, loss, batch, dtype, seed)
    report = funcnn.gradcheck(net, params, x, y, dtype=dtype, sweep_entries=0)
    err = {ref: report.worst(ref).max_rel for ref in REFERENCES}
    excluded = sum(r.excluded for r in report.rows if r.reference == "finite_diff")

    theta, unravel = ravel_pytree(params)
    fns = {
        "manual": (jax.jit(net.grad), (params, x, y)),
        "reverse": (jax.jit(jax.grad(net.loss)), (params, x, y)),
        # One JVP per parameter: O(P) forward passes, the price of forward mode.
        "jacfwd": (jax.jit(jax.jacfwd(lambda t, x, y: net.loss(unravel(t), x, y))), (theta, x, y)),
    }
    times = {name: median_time(lambda f=f, a=a: f(*a), repeats) for name, (f, a) in fns.items()}
    return {
        "hidden": hidden if depth else "-", "output": output, "loss": loss, "depth": depth,
        "sizes": "-".join(map(str, sizes)), "dtype": dtype, "params": net.num_params,
        "err_reverse": err["reverse"], "err_forward": err["forward"], "err_finite_diff": err["finite_diff"],
        "fd_excluded": excluded, "passed": report.passed,
        "t_manual_us": 1e6 * times["manual"], "t_reverse_us": 1e6 * times["reverse"],
        "t_jacfwd_us": 1e6 * times["jacfwd"],
    }


def cases(activations, pairs, depths, dtypes):
    """The sweep's configurations, depth 0 once per (pair, dtype) since it has no hidden layer."""
    for dtype in dtypes:
        for depth in depths:
            for hidden in (activations if depth else activations[:1]):
                for output, loss in pairs:
                    yield hidden, output, loss, depth, dtype


HEADER = (f"{'hidden':<10} {'output':<8} {'loss':<20} {'sizes':<14} {'dtype':<7} "
          f"{'vs reverse':>10} {'vs forward':>10} {'vs fin.diff':>11} {'kinks':>5}  "
          f"{'manual us':>9} {'reverse us':>10} {'jacfwd us':>9}  result")


def format_row(r) -> str:
    return (f"{r['hidden']:<10} {r['output']:<8} {r['loss']:<20} {r['sizes']:<14} {r['dtype']:<7} "
            f"{r['err_reverse']:10.1e} {r['err_forward']:10.1e} {r['err_finite_diff']:11.1e} "
            f"{r['fd_excluded']:5d}  {r['t_manual_us']:9.1f} {r['t_reverse_us']:10.1f} "
            f"{r['t_jacfwd_us']:9.1f}  {'pass' if r['passed'] else 'FAIL'}")


def print_summary(rows, dtypes) -> None:
    from funcnn.gradcheck import TOLERANCES

    print("\nworst normwise relative error of the hand-derived gradient, over all configurations:")
    print(f"{'reference':<12} {'dtype':<8} {'worst':>9} {'tolerance':>9}  where")
    for ref in REFERENCES:
        for dtype in dtypes:
            sel = [r for r in rows if r["dtype"] == dtype]
            w = max(sel, key=lambda r: r[f"err_{ref}"])
            print(f"{ref:<12} {dtype:<8} {w[f'err_{ref}']:9.2e} {TOLERANCES[(ref, dtype)]:9.0e}  "
                  f"{w['hidden']}/{w['output']}/{w['loss']} {w['sizes']}")
    for dtype in dtypes:
        sel = [r for r in rows if r["dtype"] == dtype]
        ratio = np.median([r["t_reverse_us"] / r["t_manual_us"] for r in sel])
        print(f"median time jax.grad / manual, {dtype}: {ratio:.2f}x (over {len(sel)} configurations; "
              "tiny networks: mostly dispatch overhead)")


def plot(rows, activations, dtypes, out: Path):
    """Worst error per hidden activation, one curve per (reference, dtype); None without matplotlib."""
    try:
        import matplotlib  # noqa: F401

        from funcnn.plots import plot_curves
    except ImportError:
        return None
    hidden = [a for a in ("-",) + tuple(activations) if any(r["hidden"] == a for r in rows)]
    series = {f"{ref} {dtype}": [max((r[f"err_{ref}"] for r in rows if r["hidden"] == a and r["dtype"] == dtype),
                                     default=float("nan")) for a in hidden]
              for ref in REFERENCES for dtype in dtypes}
    return plot_curves(hidden, series, out / "compare_gradients.png", xlabel="hidden activation (- : no hidden layer)",
                       ylabel="worst normwise relative error", logy=True,
                       title="hand-derived gradient vs references (worst over pairs and depths)")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"a small subset for tests: activations {', '.join(QUICK_ACTIVATIONS)}, depth 1 "
                         "(other options still apply)")
    ap.add_argument("--activations", nargs="+", choices=ACTIVATIONS, metavar="NAME",
                    help=f"hidden activations to sweep (default: all 9: {' '.join(ACTIVATIONS)})")
    ap.add_argument("--pairs", nargs="+", choices=[f"{o}/{l}" for o, l in PAIRS], metavar="OUTPUT/LOSS",
                    help="(output, loss) pairs to sweep (default: all of funcnn.losses.PAIRS: "
                         + " ".join(f"{o}/{l}" for o, l in PAIRS) + ")")
    ap.add_argument("--depths", nargs="+", type=int, metavar="N", help="numbers of hidden layers (default: 0 1 3)")
    ap.add_argument("--dtypes", nargs="+", choices=("float32", "float64"), default=["float32", "float64"],
                    help="dtypes of the manual/reverse/forward gradients (default: both)")
    ap.add_argument("--width", type=int, default=16, help="hidden layer width (default: 16)")
    ap.add_argument("--batch", type=int, default=32, help="samples in the random batch (default: 32)")
    ap.add_argument("--repeats", type=int, default=20,
                    help="timed calls per method; the median is reported (default: 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the parameters and the random data (default: 0)")
    ap.add_argument("--out", type=Path, default=Path("runs/compare_gradients"),
                    help="folder for compare_gradients.csv and .png (default: runs/compare_gradients/)")
    args = ap.parse_args(argv)
    if args.activations is None:
        args.activations = list(QUICK_ACTIVATIONS if args.quick else ACTIVATIONS)
    if args.depths is None:
        args.depths = [1] if args.quick else [0, 1, 3]
    args.pairs = PAIRS if args.pairs is None else [tuple(p.split("/")) for p in args.pairs]
    for name in ("width", "batch", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    if any(d < 0 for d in args.depths):
        ap.error(f"--depths must be >= 0; got {args.depths}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 parameters need it; float32 ones stay float32
    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; batch {args.batch}, hidden width {args.width}, "
          f"median of {args.repeats} timed calls per method")
    print("errors: worst normwise relative error over leaves, max|manual - ref| / max|ref|; "
          "kinks: finite-difference entries at a kink, excluded")
    print(HEADER)
    print("-" * len(HEADER))
    rows = []
    for hidden, output, loss, depth, dtype in cases(args.activations, args.pairs, args.depths, args.dtypes):
        rows.append(run_case(hidden, output, loss, depth, dtype, width=args.width, batch=args.batch,
                             repeats=args.repeats, seed=args.seed))
        print(format_row(rows[-1]), flush=True)  # one line per configuration as it finishes
    print_summary(rows, args.dtypes)
    path = write_csv(rows, args.out / "compare_gradients.csv", FIELDS, float_fmt=".6e")
    print(f"\nwrote {path}")
    png = plot(rows, args.activations, args.dtypes, args.out)
    print_plot_written(png)
    failed = [r for r in rows if not r["passed"]]
    if failed:
        print(f"{len(failed)} configuration(s) outside the gradcheck tolerances")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
