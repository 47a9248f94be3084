"""Data-parallel scaling: training samples/s on 1, 2 and 4 devices for the same global batch.

Each device count runs in its own subprocess (JAX fixes the device count when
it starts): by default simulated CPU devices (``JAX_NUM_CPU_DEVICES``), which
share this machine's cores; with ``--real`` the first N devices JAX finds
(GPUs, TPUs). Each measurement is the median wall time of whole
compiled epochs (``train.make_epoch(..., mesh=mesh)``), after one warm-up
epoch that compiles, every result blocked on the device before the clock stops.

    python scripts/scaling.py                          # table + runs/scaling/scaling.json
    python scripts/scaling.py --devices 1 2 4 8 --repeats 5 --out runs/scaling-8
    python scripts/scaling.py --real --devices 1 2 4 8   # a machine with 8 GPUs

Also printed per model: the bytes all-reduced per step (the gradient: one
value per parameter, float32) and each device's share of the batch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    "digits": dict(sizes=(64, 128, 128, 10), batch=128, steps=64),
    "mnist": dict(sizes=(784, 512, 512, 10), batch=128, steps=16),
}


def worker(model: str, ndev: int, repeats: int) -> dict:
    """Runs in the subprocess: samples/s of one model on all of this process's devices."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import funcnn
    from funcnn import optim, parallel, train

    m = MODELS[model]
    sizes, batch, n = m["sizes"], m["batch"], m["batch"] * m["steps"]
    net = funcnn.mlp(list(sizes), hidden="relu")
    opt = optim.adam(1e-3)
    mesh = parallel.data_mesh(jax.devices()[:ndev])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n).astype(np.int32)
    state = train.init_state(net, opt, key=jax.random.key(0))
    state, x, y = parallel.replicate(mesh, (state, x, y))
    epoch = train.make_epoch(net, opt, batch_size=batch, mesh=mesh)
    state, losses = epoch(state, x, y)  # compiles
    jax.block_until_ready((state, losses))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, losses = epoch(state, x, y)
        jax.block_until_ready((state, losses))
        times.append(time.perf_counter() - t)
    assert np.all(np.isfinite(np.asarray(losses)))
    seconds = float(np.median(times))
    params = funcnn.count_params(state.params)
    return {"model": model, "sizes": list(sizes), "devices": mesh.size,
            "platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
            "global_batch": batch, "per_device_batch": batch // mesh.size, "steps_per_epoch": m["steps"],
            "epoch_seconds": seconds, "samples_per_second": n / seconds,
            "params": params, "allreduce_bytes_per_step": params * jnp.dtype(jnp.float32).itemsize}


def run_one(model: str, devices: int, repeats: int, real: bool) -> dict:
    env = dict(os.environ)
    if not real:
        env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
        env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, __file__, "--worker", model, "--ndev", str(devices), "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit(f"{model} on {devices} device(s) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs per measurement (median)")
    ap.add_argument("--real", action="store_true", help="the first N real devices instead of N simulated CPUs")
    ap.add_argument("--out", default="runs/scaling", help="directory for scaling.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ndev", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.ndev, args.repeats)))
        return 0

    rows = []
    for model in args.models:
        for d in args.devices:
            if MODELS[model]["batch"] % d:
                print(f"skipping {model} on {d} devices: batch {MODELS[model]['batch']} does not split evenly")
                continue
            rows.append(run_one(model, d, args.repeats, args.real))
            print(f"  measured {model} on {d} device(s)", file=sys.stderr, flush=True)

    kind = f"{rows[0]['platform']} devices ({rows[0]['device_kind']})" if rows else "no devices"
    print(f"\ndata-parallel scaling on {'real' if args.real else 'simulated'} {kind}, machine with "
          f"{os.cpu_count()} CPU cores; median of {args.repeats} epochs\n")
    head = (f"{'model':<8} {'sizes':<18} {'devices':>7} {'batch/dev':>9} {'samples/s':>11} {'speedup':>8} "
            f"{'all-reduce/step':>16}")
    print(head + "\n" + "-" * len(head))
    base = {}
    for r in rows:
        base.setdefault(r["model"], r["samples_per_second"])
        r["speedup_vs_first"] = r["samples_per_second"] / base[r["model"]]
        print(f"{r['model']:<8} {'-'.join(map(str, r['sizes'])):<18} {r['devices']:>7} {r['per_device_batch']:>9} "
              f"{r['samples_per_second']:>11,.0f} {r['speedup_vs_first']:>7.2f}x "
              f"{r['allreduce_bytes_per_step'] / 1024:>11,.1f} KiB")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import jax
    meta = {"simulated": not args.real, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "jax": jax.__version__, "repeats": args.repeats,
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    (out / "scaling.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {out / 'scaling.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
