"""Hessian-free vs L-BFGS vs Adam, full batch, on digits and on the two-lines example.

For each problem every method runs from the same initial parameters on the
whole training split; the table gives the final training loss after budgets
of gradient evaluations (a Gauss-Newton product counts as one: each is one
forward-mode plus one reverse pass, about a gradient's cost) and the
wall-clock time of the whole compiled run (compilation excluded: each run is
compiled, warmed up once, then timed).

    python scripts/hessian_free.py                    # both problems
    python scripts/hessian_free.py --budget 100 200   # gradient-evaluation budgets
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from funcnn import config as C
from funcnn import experiment, optim

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PROBLEMS = {"digits": "digits.toml", "two_lines": "two_lines.toml"}


def setup(name):
    cfg = C.load_config(CONFIGS / PROBLEMS[name], ["training.batch_size=0"])
    split = experiment.load_split(cfg)
    net = C.build_model(cfg.model)
    params = net.init(jax.random.key(0), dtype=split.x_train.dtype)
    return net, params, split.x_train, experiment.targets(net, split.y_train)


def runners(net, x, y, budget):
    vg = lambda p: net.value_and_grad(p, x, y)  # noqa: E731
    cg = 10
    hf_iters = max(1, budget // (cg + 1))  # each outer iteration: one gradient + at most cg products

    def hf(p):
        r = optim.hessian_free(vg, lambda q, v: net.gnvp(q, x, y, v), p, max_iters=hf_iters, max_cg_iters=cg)
        return r.value, r.num_evals + r.num_gnvps

    def lbfgs(p):
        r = optim.lbfgs_minimize(vg, p, max_iters=budget, tol=1e-12)
        # A run stops early when its budget of evaluations is spent: the line search may use several per iteration.
        return r.value, r.num_evals

    def adam(p, lr=1e-2):
        opt = optim.adam(lr)

        def step(c, _):
            p, s = c
            u, s = opt.update(net.grad(p, x, y), s, p)
            return (optim.apply_updates(p, u), s), None
        p, _ = jax.lax.scan(step, (p, opt.init(p)), None, length=budget)[0]
        return net.loss(p, x, y), jnp.int32(budget)

    return {"hessian_free (cg 10)": hf, "lbfgs": lbfgs, "adam (lr 1e-2)": adam}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", choices=[*PROBLEMS, "both"], default="both")
    ap.add_argument("--budget", type=int, nargs="+", default=[50, 200])
    args = ap.parse_args()
    print(f"{'problem':<10} {'budget':>6} {'method':<22} {'train loss':>11} {'grad evals':>10} {'seconds':>8}")
    for name in (list(PROBLEMS) if args.problem == "both" else [args.problem]):
        net, p0, x, y = setup(name)
        for budget in args.budget:
            for method, fn in runners(net, x, y, budget).items():
                f = jax.jit(fn)
                jax.block_until_ready(f(p0))
                t0 = time.perf_counter()
                value, evals = jax.block_until_ready(f(p0))
                secs = time.perf_counter() - t0
                print(f"{name:<10} {budget:>6} {method:<22} {float(value):11.5f} {int(evals):>10} {secs:8.3f}")


if __name__ == "__main__":
    main()
