"""The worked examples of the reference material, recomputed through funcnn's public API.

Prints each of our numbers beside the published one with the absolute
difference and OK or MISMATCH (difference above the stated tolerance):

* the 2-2-2 sigmoid network's forward pass on x = (2, 3);
* the 2-3-1 ReLU network on x = (1, 2), t = 3: prediction 21, loss 162 (mse
  with the 1/2 convention), every gradient entry, the parameters after one SGD
  step with learning rate 0.01, and the prediction over ten such steps;
* the linear collapse: a 2-3-3-3-1 network with identity activations equals the
  single affine map (W1 W2 W3 W4, ((b1 W2 + b2) W3 + b3) W4 + b4); and one
  ReLU breaks it;
* the 400-25-10 network's parameter count, 10,285.

The published values are those typed into ``tests/test_examples.py``. Everything
runs in float64. Exit status 1 if any line is a MISMATCH.

    python scripts/reproduce_examples.py
    python scripts/reproduce_examples.py --out runs/examples

Writes ``reproduce_examples.csv`` and (with matplotlib) ``reproduce_examples.png``
(the ten-step trace) under ``--out`` (default ``runs/reproduce_examples/``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import funcnn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_common.py, however this file is loaded
from _common import print_plot_written, write_csv  # noqa: E402

# Published values (tests/test_examples.py). The material writes W with one row
# per unit ([fan_out, fan_in]); ours is [fan_in, fan_out], hence the .T below.
SIGMOID_222 = {
    "W1": [[0.3, -0.4], [0.2, 0.6]], "b1": [0.25, 0.45],
    "W2": [[0.7, 0.5], [-0.3, -0.1]], "b2": [0.15, 0.35],
    "x": [2.0, 3.0], "y": [0.7122574322957417, 0.5330975738715015],
}
RELU_231 = {
    "W1": [[1.0, 2.0], [-3.0, 4.0], [1.0, -1.0]], "b1": [1.0, 2.0, 0.0],
    "W2": [[1.0, 2.0, 3.0]], "b2": [1.0],
    "x": [1.0, 2.0], "t": [3.0], "lr": 0.01,
    "prediction": 21.0, "loss": 162.0,
    "dW1": [[18, 36], [36, 72], [0, 0]], "db1": [18, 36, 0], "dW2": [[108, 126, 0]], "db2": [18],
    "W1_new": [[0.82, 1.64], [-3.36, 3.28], [1, -1]], "b1_new": [0.82, 1.64, 0],
    "W2_new": [[-0.08, 0.74, 3]], "b2_new": [0.82],
    "trace": [21, 4.008, 3.4862270472192, 3.237581493847111, 3.1167096251148805, 3.0574708289572605,
              3.028332293082342, 3.013975070347284, 3.006895129200314, 3.003402419052827],
}
PARAM_COUNT_400_25_10 = 10285

# Tolerances on the absolute difference (float64). Products of small integers and
# two-decimal steps are exact or within one rounding; the sigmoid outputs and the
# ten-step trace are transcendental or accumulated, so they get a few ulps of room.
TOL_EXACT = 0.0
TOL_ROUNDING = 1e-15
TOL_TRACE_REL = 1e-13
TOL_COLLAPSE = 1e-13
RELU_BREAKS_ABOVE = 1e-3


class Row(NamedTuple):
    example: str
    quantity: str
    ours: np.ndarray  # float64
    published: np.ndarray | str  # float64, or words where no number is published
    abs_diff: float  # max over entries
    tolerance: str  # what OK means
    ok: bool


def _fmt(a, digits: int | None = None) -> str:
    """Entries as ``repr`` (the shortest string that reads back to the same float), or to ``digits``."""
    if isinstance(a, str):
        return a
    a = np.asarray(a, np.float64)
    if a.ndim == 0:
        return repr(float(a)) if digits is None else f"{float(a):.{digits}g}"
    return "[" + ", ".join(_fmt(v, digits) for v in a) + "]"


def compare(example, quantity, ours, published, tol) -> Row:
    """One row: max |ours - published| <= tol."""
    ours, published = np.asarray(ours, np.float64), np.asarray(published, np.float64)
    if ours.shape != published.shape:
        return Row(example, quantity, ours, published, float("inf"), f"<= {tol:g}", False)
    diff = float(np.max(np.abs(ours - published))) if ours.size else 0.0
    return Row(example, quantity, ours, published, diff, f"<= {tol:g}", diff <= tol)


def layer(W_rows, b) -> dict:
    """A layer from the material's [fan_out, fan_in] weight rows."""
    return {"W": jnp.asarray(W_rows, jnp.float64).T, "b": jnp.asarray(b, jnp.float64)}


def sigmoid_forward() -> list[Row]:
    e = SIGMOID_222
    net = funcnn.mlp([2, 2, 2], hidden="sigmoid", output="sigmoid", loss="mse")
    params = [layer(e["W1"], e["b1"]), layer(e["W2"], e["b2"])]
    y = net.apply(params, jnp.asarray([e["x"]], jnp.float64))  # [1, 2]
    return [compare("2-2-2 sigmoid forward", "output y", y[0], e["y"], TOL_ROUNDING)]


def relu_backward() -> list[Row]:
    e, ex = RELU_231, "2-3-1 relu backward"
    net = funcnn.mlp([2, 3, 1], hidden="relu", output="identity", loss="mse")
    params = [layer(e["W1"], e["b1"]), layer(e["W2"], e["b2"])]
    x, t = jnp.asarray([e["x"]], jnp.float64), jnp.asarray([e["t"]], jnp.float64)  # [1, 2], [1, 1]
    loss, g = net.value_and_grad(params, x, t)
    new = jax.tree.map(lambda p, d: p - e["lr"] * d, params, g)
    rows = [
        compare(ex, "prediction", net.apply(params, x)[0, 0], e["prediction"], TOL_EXACT),
        compare(ex, "loss", loss, e["loss"], TOL_EXACT),
        compare(ex, "dL/dW1 (rows per unit)", g[0]["W"].T, e["dW1"], TOL_EXACT),
        compare(ex, "dL/db1", g[0]["b"], e["db1"], TOL_EXACT),
        compare(ex, "dL/dW2", g[1]["W"].T, e["dW2"], TOL_EXACT),
        compare(ex, "dL/db2", g[1]["b"], e["db2"], TOL_EXACT),
    ]
    ex = "2-3-1 relu one SGD step"
    rows += [
        compare(ex, f"W1 after lr={e['lr']:g}", new[0]["W"].T, e["W1_new"], TOL_ROUNDING),
        compare(ex, "b1 after", new[0]["b"], e["b1_new"], TOL_ROUNDING),
        compare(ex, "W2 after", new[1]["W"].T, e["W2_new"], TOL_ROUNDING),
        compare(ex, "b2 after", new[1]["b"], e["b2_new"], TOL_ROUNDING),
    ]
    return rows


def relu_trace() -> tuple[list[Row], list[float]]:
    e = RELU_231
    net = funcnn.mlp([2, 3, 1], hidden="relu", output="identity", loss="mse")
    params = [layer(e["W1"], e["b1"]), layer(e["W2"], e["b2"])]
    x, t = jnp.asarray([e["x"]], jnp.float64), jnp.asarray([e["t"]], jnp.float64)
    ours = []
    for _ in range(len(e["trace"])):
        ours.append(float(net.apply(params, x)[0, 0]))
        params = jax.tree.map(lambda p, d: p - e["lr"] * d, params, net.grad(params, x, t))
    rows = []
    for i, (a, b) in enumerate(zip(ours, e["trace"])):
        tol = TOL_TRACE_REL * abs(b)
        row = compare("2-3-1 relu 10-step trace", f"prediction before step {i + 1}", a, b, tol)
        rows.append(row._replace(tolerance=f"<= {TOL_TRACE_REL:g} relative"))
    return rows, ours


def linear_collapse() -> list[Row]:
    net = funcnn.mlp([2, 3, 3, 3, 1], hidden="identity", output="identity", loss="mse")
    params = net.init(jax.random.key(0), dtype=jnp.float64)
    W, b = params[0]["W"], params[0]["b"]
    for p in params[1:]:
        W, b = W @ p["W"], b @ p["W"] + p["b"]  # compose x -> (x W + b) W' + b'
    x = jax.random.normal(jax.random.key(1), (9, 2), jnp.float64)  # [9, 2]
    affine = x @ W + b[None, :]  # [9, 1]
    ex = "2-3-3-3-1 identity collapse"
    rows = [compare(ex, "max |network - single affine map|", jnp.max(jnp.abs(net.apply(params, x) - affine)),
                    0.0, TOL_COLLAPSE)]
    relu = funcnn.mlp([2, 3, 3, 3, 1], hidden="relu", output="identity", loss="mse")
    gap = float(jnp.max(jnp.abs(relu.apply(params, x) - affine)))
    rows.append(Row(ex, "same weights with relu: max |difference|", np.float64(gap), "nonzero", gap,
                    f"> {RELU_BREAKS_ABOVE:g}", gap > RELU_BREAKS_ABOVE))
    return rows


def parameter_count() -> list[Row]:
    net = funcnn.mlp([400, 25, 10], hidden="sigmoid", output="sigmoid", loss="binary_cross_entropy")
    ex = "400-25-10 parameter count"
    return [compare(ex, "net.num_params", net.num_params, PARAM_COUNT_400_25_10, TOL_EXACT),
            compare(ex, "count_params(net.init(key))", funcnn.count_params(net.init(jax.random.key(0))),
                    PARAM_COUNT_400_25_10, TOL_EXACT)]


def print_table(rows) -> None:
    # 12 significant digits keep the table readable; |diff| and the CSV carry full precision.
    head = f"{'example':<28} {'quantity':<40} {'ours':<34} {'published':<34} {'|diff|':>9} {'tolerance':<18} result"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.example:<28} {r.quantity:<40} {_fmt(r.ours, 12):<34} {_fmt(r.published, 12):<34} "
              f"{r.abs_diff:9.2e} {r.tolerance:<18} {'OK' if r.ok else 'MISMATCH'}")


CSV_FIELDS = ["example", "quantity", "ours", "published", "abs_diff", "tolerance", "result"]


def csv_rows(rows) -> list[dict]:
    return [{"example": r.example, "quantity": r.quantity, "ours": _fmt(r.ours), "published": _fmt(r.published),
             "abs_diff": r.abs_diff, "tolerance": r.tolerance, "result": "OK" if r.ok else "MISMATCH"}
            for r in rows]


def plot(trace, out: Path):
    try:
        import matplotlib  # noqa: F401

        from funcnn.plots import plot_curves
    except ImportError:
        return None
    steps = list(range(len(trace)))
    return plot_curves(steps, {"ours": trace, "published": RELU_231["trace"],
                               "|ours - published|": [abs(a - b) for a, b in zip(trace, RELU_231["trace"])]},
                       out / "reproduce_examples.png", xlabel="SGD steps taken", ylabel="prediction (t = 3)",
                       logy=True, title="2-3-1 relu network, lr 0.01: prediction trace (0 not drawn)")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/reproduce_examples"),
                    help="folder for reproduce_examples.csv and .png (default: runs/reproduce_examples/)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # the published numbers are float64
    trace_rows, trace = relu_trace()
    rows = sigmoid_forward() + relu_backward() + trace_rows + linear_collapse() + parameter_count()
    print_table(rows)
    bad = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} OK" + (f", {len(bad)} MISMATCH" if bad else ""))
    path = write_csv(csv_rows(rows), args.out / "reproduce_examples.csv", CSV_FIELDS, float_fmt=".3e")
    print(f"wrote {path}")
    png = plot(trace, args.out)
    print_plot_written(png)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
