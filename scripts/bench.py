"""Training throughput benchmark: funcnn against plain JAX, NumPy and (if installed) peers.

A benchmark, not a test: one process; every candidate is warmed up, then the
candidates are timed round-robin (each repeat times each once) and the median
of the repeats is kept, every result blocked on the device
(``block_until_ready``) before the clock stops. Ratios are taken between
candidates measured in this same run, interleaved, so a slow spell of the
machine does not favour whichever candidate ran before it.

    python scripts/bench.py                   # both sizes, table + JSON in bench_results/
    python scripts/bench.py --size digits --repeats 5
    python scripts/bench.py --size digits --models 0   # skip the K-model group
    python scripts/bench.py --only curvature  # net.hvp and per-example gradient norms vs autodiff

Optional peers: ``pip install -e ".[bench]"`` adds Flax+Optax and PyTorch (CPU);
they are never dependencies of the library.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import funcnn
from funcnn import layers, optim, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_common.py, however this file is loaded
from _common import interleaved_times, median_time  # noqa: E402

SIZES = {
    "digits": dict(sizes=(64, 128, 128, 10), batch=32, n=32 * 512),
    "mnist": dict(sizes=(784, 512, 512, 10), batch=128, n=128 * 48),
}
LR = 0.01
BASELINE = "plain jax.grad + SGD, epoch in lax.scan"
FLAX = "flax+optax jitted step loop"
NETWORK = "funcnn.network([dense, ...]) spelling, epoch (manual)"


def gemm_peak(repeats):
    """float32 GFLOP/s of a large square matmul, best of ``repeats``: the machine's practical peak."""
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * n**3 / median_time(lambda: f(a), repeats, stat=np.min) / 1e9


def batched_gemm_gflops(k, batch, width, repeats):
    """float32 GFLOP/s of K independent [B, h] x [h, h] matmuls in one batched dot.

    The hidden layers of K vmapped models are exactly this: its rate bounds
    what vmap can deliver at that shape, however little overhead remains.
    """
    a = jax.random.normal(jax.random.key(0), (k, batch, width), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (k, width, width), jnp.float32)
    f = jax.jit(lambda a, w: jnp.einsum("kbh,khj->kbj", a, w))
    return 2 * k * batch * width * width / median_time(lambda: f(a, w), repeats, stat=np.min) / 1e9


def flops_per_sample(sizes):
    # forward 2*MACs, backward 4*MACs (dW and dx): the usual 6 * weights per sample.
    return 6 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def problem(size):
    cfg = SIZES[size]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((cfg["n"], cfg["sizes"][0])), jnp.float32)
    y = jnp.asarray(rng.integers(0, cfg["sizes"][-1], cfg["n"]), jnp.int32)
    return cfg, x, y


# ------------------------------------------------------------------ baselines written plainly


def plain_loss(params, x, y):
    h = x
    for p in params[:-1]:
        h = jax.nn.relu(h @ p["W"] + p["b"][None, :])
    z = h @ params[-1]["W"] + params[-1]["b"][None, :]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))


def plain_sgd_step(params, x, y):
    g = jax.grad(plain_loss)(params, x, y)
    return jax.tree.map(lambda p, d: p - LR * d, params, g)


def plain_scan_epoch(batch, shuffle=False):
    """The baseline: jax.grad + SGD scanned over an epoch, optionally reshuffled like funcnn's epoch."""
    @jax.jit
    def epoch(params, x, y, key):
        if shuffle:  # the usual on-device shuffle (a sort; funcnn's is funcnn.shuffle.permutation)
            perm = jax.random.permutation(key, x.shape[0])
            x, y = x[perm], y[perm]
        nb = x.shape[0] // batch
        xb, yb = x[: nb * batch].reshape(nb, batch, -1), y[: nb * batch].reshape(nb, batch)
        return jax.lax.scan(lambda p, b: (plain_sgd_step(p, *b), None), params, (xb, yb))[0]
    return epoch


def numpy_epoch(params, x, y, batch):
    """The classic from-scratch tutorial: NumPy forward and backward, SGD."""
    P = [(np.array(p["W"]), np.array(p["b"])) for p in params]
    for i in range(0, x.shape[0] - batch + 1, batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        hs, h = [xb], xb
        for W, b in P[:-1]:
            h = np.maximum(h @ W + b, 0)
            hs.append(h)
        z = h @ P[-1][0] + P[-1][1]
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(batch), yb] -= 1
        dz = p / batch
        for l in range(len(P) - 1, -1, -1):
            W, b = P[l]
            dW, db = hs[l].T @ dz, dz.sum(0)
            if l:
                dz = (dz @ W.T) * (hs[l] > 0)
            P[l] = (W - LR * dW, b - LR * db)
    return P


def peers(cfg, x, y):
    """Flax linen + Optax jitted step loop, PyTorch eager (only when installed): name -> one epoch."""
    out = {}
    n, batch, sizes = x.shape[0], cfg["batch"], cfg["sizes"]
    try:
        import flax.linen as nn
        import optax

        class Net(nn.Module):
            @nn.compact
            def __call__(self, h):
                for w in sizes[1:-1]:
                    h = nn.relu(nn.Dense(w)(h))
                return nn.Dense(sizes[-1])(h)

        model, tx = Net(), optax.sgd(LR)
        params = model.init(jax.random.key(0), x[:1])
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state, xb, yb):
            def loss(p):
                return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()
            g = jax.grad(loss)(params)
            u, opt_state = tx.update(g, opt_state)
            return optax.apply_updates(params, u), opt_state

        def run():
            p, s = params, opt_state
            for i in range(0, n - batch + 1, batch):
                p, s = step(p, s, x[i:i + batch], y[i:i + batch])
            return p
        out[FLAX] = run
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(0)
        layers = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        tnet = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-2], sizes[-1]))
        topt = torch.optim.SGD(tnet.parameters(), lr=LR)
        xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.asarray(y).astype(np.int64))

        def run_torch():
            for i in range(0, n - batch + 1, batch):
                topt.zero_grad()
                torch.nn.functional.cross_entropy(tnet(xt[i:i + batch]), yt[i:i + batch]).backward()
                topt.step()
        out["pytorch eager"] = lambda: run_torch() or jnp.zeros(())
    except ImportError:
        pass
    return out


# ------------------------------------------------------------------ funcnn candidates


def bench_size(size, repeats, k_models):
    cfg, x, y = problem(size)
    n, batch = x.shape[0], cfg["batch"]
    net = funcnn.mlp(list(cfg["sizes"]), hidden="relu")
    opt = optim.sgd(LR)
    state0 = train.init_state(net, opt, key=jax.random.key(0))
    cands = {}  # name -> (one call, samples it trains)

    for grad in ("manual", "autodiff"):
        epoch = train.make_epoch(net, opt, batch_size=batch, grad=grad, drop_last=True)
        cands[f"funcnn epoch ({grad} grads)"] = (functools.partial(epoch, state0, x, y), n)

    # The same MLP spelled as funcnn.network of dense layers: the layer code path must cost nothing.
    spelled = funcnn.network([layers.dense(w, "relu") for w in cfg["sizes"][1:-1]] + [layers.dense(cfg["sizes"][-1])],
                             input_size=cfg["sizes"][0])
    epoch = train.make_epoch(spelled, opt, batch_size=batch, drop_last=True)
    cands[NETWORK] = (functools.partial(epoch, state0, x, y), n)
    # A layer-norm + residual network of the same widths: hand-derived vs autodiff.
    w = cfg["sizes"][1]
    ln_res = funcnn.network([layers.dense(w, "relu"), layers.layer_norm(),
                             layers.residual(layers.dense(w, "relu"), layers.layer_norm()),
                             layers.dense(cfg["sizes"][-1])],
                            input_size=cfg["sizes"][0])
    ln_state = train.init_state(ln_res, opt, key=jax.random.key(0))
    for grad in ("manual", "autodiff"):
        epoch = train.make_epoch(ln_res, opt, batch_size=batch, grad=grad, drop_last=True)
        cands[f"layer-norm + residual net epoch ({grad} grads)"] = (functools.partial(epoch, ln_state, x, y), n)

    def fit5():  # the whole user-facing call: checks, init, 5 epochs, one host sync per epoch
        return train.fit(net, opt, (x, y), epochs=5, batch_size=batch, key=jax.random.key(0), drop_last=True)[0]
    cands["funcnn fit, 5 epochs per call (manual)"] = (fit5, 5 * n)

    step = train.make_train_step(net, opt, "manual")

    def loop():
        s = jax.tree.map(jnp.array, state0)  # the step donates its state: start from a copy
        for i in range(0, n - batch + 1, batch):
            s, _ = step(s, x[i:i + batch], y[i:i + batch])
        return s
    cands["funcnn step per Python call (manual)"] = (loop, n)

    params = state0.params
    key = jax.random.key(0)
    plain_epoch = plain_scan_epoch(batch)  # built once: a new jit per call would recompile every time
    cands[BASELINE] = (functools.partial(plain_epoch, params, x, y, key), n)
    shuffled = plain_scan_epoch(batch, shuffle=True)
    cands["plain, lax.scan + random.permutation"] = (functools.partial(shuffled, params, x, y, key), n)
    pstep = jax.jit(plain_sgd_step)

    def ploop():
        p = params
        for i in range(0, n - batch + 1, batch):
            p = pstep(p, x[i:i + batch], y[i:i + batch])
        return p
    cands["plain jax.grad jitted step, Python loop"] = (ploop, n)
    xn, yn = np.asarray(x), np.asarray(y)
    # NumPy's BLAS and PyTorch's OpenMP threads spin-wait after each call and
    # would slow whatever runs next on 2 cores: they are timed apart, after the JAX ones.
    apart = {"numpy from scratch": lambda: numpy_epoch(params, xn, yn, batch) and jnp.zeros(())}
    peer = peers(cfg, x, y)
    if FLAX in peer:
        cands[FLAX] = (peer.pop(FLAX), n)
    apart.update(peer)  # pytorch

    times = interleaved_times({name: fn for name, (fn, _) in cands.items()}, repeats)
    res = {name: samples / times[name] for name, (_, samples) in cands.items()}
    res.update((name, n / median_time(fn, repeats)) for name, fn in apart.items())

    extra = {"network_vs_mlp": res[NETWORK] / res["funcnn epoch (manual grads)"],
             "layernorm_residual_manual_vs_autodiff": res["layer-norm + residual net epoch (manual grads)"]
             / res["layer-norm + residual net epoch (autodiff grads)"]}
    cands = {}  # the K-model candidates form a group of their own (their buffers slow the others)
    if k_models:
        keys = jax.random.split(jax.random.key(1), k_models)
        states = jax.vmap(lambda k: train.init_state(net, opt, key=k))(keys)
        scales = jnp.ones((k_models,), jnp.float32)
        epoch = train.make_epoch(net, opt, batch_size=batch, drop_last=True)
        singles = [train.init_state(net, opt, key=k) for k in keys]
        for shared, label in ((False, ""), (True, ", shared order")):
            many = train._many_epoch(net, opt, "manual", batch, True, shared)
            cands[f"funcnn {k_models} models under vmap{label}"] = (
                functools.partial(many, states, x, y, scales, None, None), k_models * n)
        cands[f"funcnn {k_models} models one after another"] = (
            lambda: [epoch(s, x, y)[0] for s in singles], k_models * n)

        times = interleaved_times({name: fn for name, (fn, _) in cands.items()}, repeats)
        res.update((name, samples / times[name]) for name, (_, samples) in cands.items())
        seq = res[f"funcnn {k_models} models one after another"]
        extra["vmap_speedup"] = res[f"funcnn {k_models} models under vmap"] / seq
        extra["vmap_speedup_shared_order"] = res[f"funcnn {k_models} models under vmap, shared order"] / seq
        # The most vmap could give at this shape: batched-GEMM rate over the sequential runs' rate.
        extra["vmap_ceiling"] = (batched_gemm_gflops(k_models, batch, cfg["sizes"][1], repeats)
                                 / (seq * flops_per_sample(cfg["sizes"]) / 1e9))
    return res, extra


def first_epoch_seconds():
    """Wall time of the digits job's first epoch, compilation included, in a fresh process."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import jax, funcnn\nfrom funcnn import data, optim, train\n"
        "x, y = data.load_digits()\n"
        "xtr, xte, ytr, yte = data.train_test_split(x, y, key=jax.random.key(0), stratify=True)\n"
        "net = funcnn.mlp([64, 256, 10])\n"
        "t1 = time.perf_counter()\n"
        "train.fit(net, optim.adam(1e-3), (xtr, ytr), epochs=1, batch_size=32, key=jax.random.key(1),"
        " validation=(xte, yte))\n"
        "print(time.perf_counter() - t1, t1 - t0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, imports = (float(v) for v in out.stdout.split())
    return first, imports


# ------------------------------------------------------------------ curvature and per-example gradients


def _temp_mib(f, *args):
    """Compiled temporary memory of ``jax.jit(f)(*args)`` in MiB (XLA's memory_analysis)."""
    m = jax.jit(f).lower(*args).compile().memory_analysis()
    return None if m is None else m.temp_size_in_bytes / 2**20


def _per_call(timer, candidates, repeats, *, sample_seconds=0.02):
    """Seconds per call, each timed sample ``k`` calls in a row (about ``sample_seconds``).

    A digits-sized hvp takes about 1 ms: timed one call at a time, scheduler
    jitter moved its ratio by +-15% from run to run (0.81-1.14x in three runs);
    samples of 20 ms agree within a few percent. ``k`` is set by the slower
    candidate of the pair, from one timed call after the warm-up.
    """
    one = max(median_time(fn, 3) for fn in candidates.values())
    k = max(1, round(sample_seconds / one))

    def calls(fn):
        def run():
            for _ in range(k - 1):
                fn()
            return fn()  # the timer blocks on the last; the others were dispatched without waiting, as steps are
        return run

    return {name: sec / k for name, sec in timer({n: calls(fn) for n, fn in candidates.items()}, repeats).items()}


LOOP = 50  # hvps per call in the "one compiled loop" rows


def _in_a_loop(hvp):
    """``(params, x, y, v) -> v'``: ``LOOP`` dependent hvps in one ``fori_loop``, one dispatch for all.

    Each step nudges ``v`` by ``1e-6 H v``, so no product can be hoisted out of the loop; the
    time per hvp is then XLA's execution alone, without a Python call and a dispatch for each.
    """
    def run(params, x, y, v):
        def step(i, v):
            return jax.tree.map(lambda a, b: a + 1e-6 * b, v, hvp(params, x, y, v))
        return jax.lax.fori_loop(0, LOOP, step, v)
    return jax.jit(run)


def bench_curvature(size, repeats):
    """Ratios of net.hvp and net.per_example_grad_norms against autodiff, and their compiled memory."""
    cfg = SIZES[size]
    net = funcnn.mlp(list(cfg["sizes"]), hidden="relu")
    params = net.init(jax.random.key(0))
    _, x, y = problem(size)
    x, y = x[:128], y[:128]  # batch 128: per-example quantities at the MNIST-sized net's batch
    v = jax.tree.map(jnp.ones_like, params)
    ours_hvp = jax.jit(net.hvp)
    auto_hvp = jax.jit(lambda p, x, y, v: jax.jvp(jax.grad(lambda q: net.loss(q, x, y)), (p,), (v,))[1])
    ours_norms = jax.jit(net.per_example_grad_norms)

    def vmap_norms(p, x, y):
        g = jax.vmap(lambda xi, yi: jax.grad(net.loss)(p, xi[None], yi[None]))(x, y)
        return jnp.sqrt(sum(jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1) for a in jax.tree.leaves(g)))
    auto_norms = jax.jit(vmap_norms)
    # Each pair is interleaved on its own: in one round-robin of all four, net.hvp ran right after
    # vmap(grad) + norms, whose ~200 MiB of temporaries had flushed the caches, and jax.jvp(jax.grad)
    # after net.hvp, warm; MNIST-sized hvp measured 0.6-0.9x that way, ~1.0x alternating with its peer.
    t = _per_call(interleaved_times, {"net.hvp": lambda: ours_hvp(params, x, y, v),
                                      "jax.jvp(jax.grad(net.loss))": lambda: auto_hvp(params, x, y, v)}, repeats)
    plain = lambda p, x, y, v: jax.jvp(jax.grad(lambda q: net.loss(q, x, y)), (p,), (v,))[1]  # noqa: E731
    ours_loop, auto_loop = _in_a_loop(net.hvp), _in_a_loop(plain)
    looped = interleaved_times({"net.hvp, in one compiled loop": lambda: ours_loop(params, x, y, v),
                                "jax.jvp(jax.grad), in one compiled loop": lambda: auto_loop(params, x, y, v)},
                               repeats)
    t |= {name: sec / LOOP for name, sec in looped.items()}
    t |= _per_call(interleaved_times, {"net.per_example_grad_norms": lambda: ours_norms(params, x, y),
                                       "vmap(grad) + norms": lambda: auto_norms(params, x, y)}, repeats)
    mem = {"net.per_example_grad_norms": _temp_mib(net.per_example_grad_norms, params, x, y),
           "vmap(grad) + norms": _temp_mib(vmap_norms, params, x, y),
           "net.hvp": _temp_mib(net.hvp, params, x, y, v),
           "jax.jvp(jax.grad(net.loss))": _temp_mib(auto_hvp, params, x, y, v)}
    return {"seconds": t, "temp_mib": mem,
            "hvp_speedup": t["jax.jvp(jax.grad(net.loss))"] / t["net.hvp"],
            "hvp_speedup_in_loop": t["jax.jvp(jax.grad), in one compiled loop"] / t["net.hvp, in one compiled loop"],
            "norms_speedup": t["vmap(grad) + norms"] / t["net.per_example_grad_norms"]}


def main_curvature(args):
    report = {"device": str(jax.devices()[0]), "sizes": {}}
    for size in (["digits", "mnist"] if args.size == "both" else [args.size]):
        r = bench_curvature(size, args.repeats)
        report["sizes"][size] = r
        print(f"\n{size}: {'-'.join(map(str, SIZES[size]['sizes']))}, relu/softmax, batch 128, float32")
        print(f"{'candidate':<32} {'ms/call':>9} {'temp MiB':>9}")
        for name, sec in r["seconds"].items():
            mib = r["temp_mib"].get(name)
            print(f"{name:<32} {sec * 1e3:9.3f} {'n/a' if mib is None else f'{mib:9.2f}':>9}")
        print(f"net.hvp vs jax.jvp(jax.grad): {r['hvp_speedup']:.2f}x per call, "
              f"{r['hvp_speedup_in_loop']:.2f}x in one compiled loop of {LOOP}; "
              f"per-example norms vs vmap(grad): {r['norms_speedup']:.2f}x")
    Path(args.out).mkdir(exist_ok=True)
    path = Path(args.out) / "bench_curvature.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"results written to {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["digits", "mnist", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--models", type=int, default=32, help="K for the vmapped many-models row (0: skip)")
    ap.add_argument("--out", default="bench_results", help="folder for the JSON results")
    ap.add_argument("--only", choices=["all", "curvature"], default="all",
                    help="curvature: only the net.hvp and per-example gradient-norm rows")
    args = ap.parse_args()
    if args.only == "curvature":
        return main_curvature(args)

    report = {"device": str(jax.devices()[0]), "platform": platform.platform(), "cpus": os.cpu_count(),
              "jax": jax.__version__, "funcnn": funcnn.__version__, "sizes": {}}
    peak = gemm_peak(args.repeats)
    report["gemm_peak_gflops"] = peak
    print(f"device: {report['device']}; float32 GEMM peak (2048^2 matmul): {peak:.1f} GFLOP/s")
    for size in (["digits", "mnist"] if args.size == "both" else [args.size]):
        res, extra = bench_size(size, args.repeats, args.models if size == "digits" else 0)
        cfg = SIZES[size]
        fps = flops_per_sample(cfg["sizes"])
        base = res[BASELINE]
        print(f"\n{size}: {'-'.join(map(str, cfg['sizes']))}, batch {cfg['batch']}, float32, "
              f"{cfg['n']} samples per epoch, SGD")
        print(f"{'candidate':<48} {'samples/s':>12} {'vs plain scan':>14} {'of GEMM peak':>13}")
        for name, sps in res.items():
            print(f"{name:<48} {sps:12,.0f} {sps / base:13.2f}x {sps * fps / 1e9 / peak:12.1%}")
        for k, v in extra.items():
            print(f"{k}: {v:.2f}x")
        report["sizes"][size] = {"results": res, **extra, "flops_per_sample": fps}
    first, imports = first_epoch_seconds()
    report["digits_first_epoch_s"] = first
    print(f"\nfirst epoch of the digits job (64-256-10, adam, batch 32), compilation included: {first:.2f} s"
          f" (imports and data loading before it: {imports:.2f} s)")
    Path(args.out).mkdir(exist_ok=True)
    path = Path(args.out) / f"bench_{report['device'].split(':')[0].replace(' ', '_').lower()}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
