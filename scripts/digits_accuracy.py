"""Digits accuracy over seeds: the numbers behind the README's results table.

For each seed (its own stratified 70/30 split and its own init), trains the
config with the hand-derived gradients and again with ``jax.grad``, each in a
fresh Python process so the reported time includes XLA compilation, and
reports the test accuracy per seed, the mean and spread, the time per run and
the largest parameter difference between the manual and autodiff runs.

    python scripts/digits_accuracy.py                       # configs/digits.toml, seeds 0-4
    python scripts/digits_accuracy.py --seeds 10 --set model.sizes=[64,128,10]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = r"""
import json, sys, time
import jax, numpy as np
from funcnn import config, experiment
cfg = config.load_config(sys.argv[1], json.loads(sys.argv[2]))
split = experiment.load_split(cfg)
t = time.perf_counter()
result = experiment.run(cfg, split)
seconds = time.perf_counter() - t
np.savez(sys.argv[3], *[np.asarray(l) for l in jax.tree.leaves(result.state.params)])
print(json.dumps({"accuracy": result.test["accuracy"], "seconds": seconds}))
"""


def run_one(config, overrides, out):
    proc = subprocess.run([sys.executable, "-c", WORKER, config, json.dumps(overrides), out],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).parents[1] / "configs" / "digits.toml"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="runs/digits_accuracy")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'seed':>4} {'manual acc':>11} {'autodiff acc':>13} {'manual s':>9} {'autodiff s':>11} "
          f"{'max |param diff|':>17}")
    for seed in range(args.seeds):
        res = {}
        for grad in ("manual", "autodiff"):
            res[grad] = run_one(args.config, args.set + [f"training.seed={seed}", f"training.grad={grad}"],
                                str(out / f"params_{seed}_{grad}.npz"))
        with np.load(out / f"params_{seed}_manual.npz") as a, np.load(out / f"params_{seed}_autodiff.npz") as b:
            diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files)
        rows.append({"seed": seed, **{f"{g}_{k}": v for g, r in res.items() for k, v in r.items()},
                     "max_param_diff": diff})
        r = rows[-1]
        print(f"{seed:>4} {r['manual_accuracy']:>11.4f} {r['autodiff_accuracy']:>13.4f} "
              f"{r['manual_seconds']:>9.2f} {r['autodiff_seconds']:>11.2f} {diff:>17.2e}", flush=True)
    acc = np.array([r["manual_accuracy"] for r in rows])
    secs = np.array([r["manual_seconds"] for r in rows])
    summary = {"config": args.config, "overrides": args.set, "rows": rows, "mean": float(acc.mean()),
               "std": float(acc.std()), "min": float(acc.min()), "max": float(acc.max()),
               "max_seconds": float(secs.max()),
               "max_param_diff": max(r["max_param_diff"] for r in rows)}
    print(f"manual gradients: mean {acc.mean():.4f} +/- {acc.std():.4f} (min {acc.min():.4f}, "
          f"max {acc.max():.4f}); slowest run {secs.max():.2f} s; largest manual-vs-autodiff parameter "
          f"difference {summary['max_param_diff']:.2e}")
    (out / "digits_accuracy.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
