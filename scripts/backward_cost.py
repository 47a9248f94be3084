"""What the hand-derived backward pass costs against jax.grad, as XLA compiles and runs it.

For one network (default 784-512-512-10 relu, softmax cross-entropy, batch 128,
float32, random data) each candidate is compiled ahead of time with
``jax.jit(f).lower(...).compile()``, and reported:

* from ``compiled.cost_analysis()``: XLA's own estimate of FLOPs, bytes
  accessed and transcendental operations of the optimised program (an
  estimate from the HLO after fusion, not a hardware counter; backends may
  omit fields, shown as ``-``);
* from ``compiled.memory_analysis()``: argument, output and temporary buffer
  bytes of the compiled program;
* the measured median wall time of the compiled call (warmed up, blocked on
  with ``block_until_ready``).

Whole network, loss and gradient together:
  ``manual``         the hand-derived ``net.value_and_grad``;
  ``autodiff``       ``jax.value_and_grad(net.loss)``;
  ``manual vjp``     ``jax.value_and_grad(net.loss_manual_vjp)``: jax.grad
                     driving the hand-derived backward through ``custom_vjp``.

Per layer, the dense backward alone (given the layer input h [n, fan_in], W and
the incoming dz [n, fan_out]; the activation derivative and the loss gradient
are not included):
  ``manual``    dW = h^T dz, db = sum_rows dz, dx = dz W^T  (dx skipped for the
                first layer, as ``net.backward`` does);
  ``autodiff``  ``jax.vjp`` of the layer forward ``h W + b`` applied to dz
                (with respect to W and b only for the first layer).
The ``analytic`` column counts FLOPs by hand: per layer 2 n fan_in fan_out for
each of dW and dx, plus n fan_out for db; for the whole network the matmuls of
the forward and backward passes only (elementwise work and the loss excluded).

    python scripts/backward_cost.py                          # 784-512-512-10, batch 128
    python scripts/backward_cost.py --sizes 64 128 10 --batch 32 --dtype float64

Writes ``backward_cost.csv`` and (with matplotlib) ``backward_cost.png`` under
``--out`` (default ``runs/backward_cost/``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import funcnn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_common.py, however this file is loaded
from _common import median_time, print_plot_written, write_csv  # noqa: E402

FIELDS = ("scope", "method", "flops", "analytic_flops", "bytes_accessed", "transcendentals",
          "argument_bytes", "output_bytes", "temp_bytes", "median_us")


def costs(compiled) -> dict:
    """FLOPs, bytes and memory of a compiled program; None where the backend gives none."""
    ca = compiled.cost_analysis()
    # A dict in recent JAX, a list with one dict per device/program in older ones.
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    ca = ca or {}
    ma = compiled.memory_analysis()

    def mem(name):
        v = getattr(ma, name, None) if ma is not None else None
        return int(v) if v is not None else None

    num = lambda k: float(ca[k]) if k in ca else None
    return {"flops": num("flops"), "bytes_accessed": num("bytes accessed"),
            "transcendentals": num("transcendentals"), "argument_bytes": mem("argument_size_in_bytes"),
            "output_bytes": mem("output_size_in_bytes"), "temp_bytes": mem("temp_size_in_bytes")}


def measure(scope: str, method: str, fn, args, repeats: int, analytic=None) -> dict:
    compiled = jax.jit(fn).lower(*args).compile()
    return {"scope": scope, "method": method, **costs(compiled), "analytic_flops": analytic,
            "median_us": 1e6 * median_time(lambda: compiled(*args), repeats, warmup=2)}


def whole_network(net, params, x, y, repeats: int) -> list[dict]:
    sizes, n = net.spec.sizes, x.shape[0]
    macs = [fi * fo for fi, fo in zip(sizes[:-1], sizes[1:])]
    # Matmuls only: forward h W, backward h^T dz for every layer and dz W^T above the first.
    analytic = 2 * n * (2 * sum(macs) + sum(macs[1:]))
    return [
        measure("network", "manual", net.value_and_grad, (params, x, y), repeats, analytic),
        measure("network", "autodiff", jax.value_and_grad(net.loss), (params, x, y), repeats, analytic),
        measure("network", "manual vjp", jax.value_and_grad(net.loss_manual_vjp), (params, x, y), repeats,
                analytic),
    ]


def per_layer(sizes, batch: int, dtype, repeats: int) -> list[dict]:
    rows = []
    for l, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        k1, k2, k3 = jax.random.split(jax.random.key(100 + l), 3)
        h = jax.random.normal(k1, (batch, fi), dtype)  # the layer's input
        W = jax.random.normal(k2, (fi, fo), dtype) * fi ** -0.5  # a Python float keeps the dtype
        b = jnp.zeros((fo,), dtype)
        dz = jax.random.normal(k3, (batch, fo), dtype)  # dL/dz arriving from above
        need_dx = l > 0
        analytic = 2 * batch * fi * fo * (2 if need_dx else 1) + batch * fo
        if need_dx:
            def manual(h, W, b, dz):
                del b
                return h.T @ dz, jnp.sum(dz, axis=0), dz @ W.T

            def autodiff(h, W, b, dz):
                return jax.vjp(lambda h, W, b: h @ W + b[None, :], h, W, b)[1](dz)
        else:
            def manual(h, W, b, dz):
                del b
                return h.T @ dz, jnp.sum(dz, axis=0)

            def autodiff(h, W, b, dz):
                return jax.vjp(lambda W, b: h @ W + b[None, :], W, b)[1](dz)
        scope = f"layer {l} {fi}x{fo} {'dW db dx' if need_dx else 'dW db'}"
        rows.append(measure(scope, "manual", manual, (h, W, b, dz), repeats, analytic))
        rows.append(measure(scope, "autodiff", autodiff, (h, W, b, dz), repeats, analytic))
    return rows


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(rows) -> None:
    head = (f"{'scope':<24} {'method':<11} {'XLA FLOPs':>10} {'analytic':>10} {'bytes acc.':>10} "
            f"{'transc.':>8} {'arg bytes':>10} {'out bytes':>10} {'temp bytes':>10} {'median us':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['scope']:<24} {r['method']:<11} {_fmt(r['flops'], '10.3e')} {_fmt(r['analytic_flops'], '10.3e')} "
              f"{_fmt(r['bytes_accessed'], '10.3e')} {_fmt(r['transcendentals'], '8.0f')} "
              f"{_fmt(r['argument_bytes'], '10d')} {_fmt(r['output_bytes'], '10d')} {_fmt(r['temp_bytes'], '10d')} "
              f"{r['median_us']:10.1f}")


def print_ratios(rows) -> None:
    print("\nmanual / autodiff (below 1: the hand-derived version is cheaper):")
    scopes = list(dict.fromkeys(r["scope"] for r in rows))
    for scope in scopes:
        by = {r["method"]: r for r in rows if r["scope"] == scope}
        m, a = by["manual"], by["autodiff"]
        parts = [f"time {m['median_us'] / a['median_us']:.3f}x"]
        for k, name in (("flops", "FLOPs"), ("bytes_accessed", "bytes"), ("temp_bytes", "temp memory")):
            if m[k] is not None and a[k]:
                parts.append(f"{name} {m[k] / a[k]:.4f}x")
        print(f"  {scope:<24} " + ", ".join(parts))


def plot(rows, out: Path):
    """Median time per scope, manual against autodiff; None without matplotlib."""
    try:
        import matplotlib  # noqa: F401

        from funcnn.plots import plot_curves
    except ImportError:
        return None
    scopes = list(dict.fromkeys(r["scope"] for r in rows))
    series = {m: [next((r["median_us"] for r in rows if r["scope"] == s and r["method"] == m), float("nan"))
                  for s in scopes] for m in ("manual", "autodiff", "manual vjp")}
    return plot_curves(scopes, series, out / "backward_cost.png", xlabel="", ylabel="median time (us)",
                       logy=True, title="hand-derived backward vs autodiff, compiled")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[784, 512, 512, 10], metavar="N",
                    help="layer widths, input first (default: 784 512 512 10)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (default: 128)")
    ap.add_argument("--hidden", default="relu", help="hidden activation (default: relu)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="dtype (default: float32)")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls; the median is reported (default: 50)")
    ap.add_argument("--out", type=Path, default=Path("runs/backward_cost"),
                    help="folder for backward_cost.csv and .png (default: runs/backward_cost/)")
    args = ap.parse_args(argv)
    if len(args.sizes) < 2 or min(args.sizes) < 1:
        ap.error(f"--sizes needs at least two positive widths; got {args.sizes}")
    if args.batch < 1 or args.repeats < 1:
        ap.error("--batch and --repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    net = funcnn.mlp(args.sizes, hidden=args.hidden)
    params = net.init(jax.random.key(0), dtype=args.dtype)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, args.sizes[0])), args.dtype)  # [batch, d_in]
    y = jnp.asarray(rng.integers(0, args.sizes[-1], args.batch), jnp.int32)  # [batch] labels
    print(f"device: {jax.devices()[0]}; jax {jax.__version__}; {'-'.join(map(str, args.sizes))} {args.hidden}, "
          f"softmax cross-entropy, batch {args.batch}, {args.dtype}; median of {args.repeats} calls")
    print("FLOPs, bytes, transcendentals: XLA cost_analysis() estimates of the compiled program; "
          "memory: memory_analysis(); time: measured.")
    rows = whole_network(net, params, x, y, args.repeats) + per_layer(args.sizes, args.batch, args.dtype,
                                                                      args.repeats)
    print_table(rows)
    print_ratios(rows)
    path = write_csv(rows, args.out / "backward_cost.csv", FIELDS)
    print(f"\nwrote {path}")
    png = plot(rows, args.out)
    print_plot_written(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
