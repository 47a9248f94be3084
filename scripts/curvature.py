"""Curvature and gradient noise over training on digits, hand-derived vs autodiff side by side.

Trains the digits MLP (64-256-10, relu, softmax + cross-entropy) with Adam
and, every few epochs, reports

* the top Hessian eigenvalues of the training loss by Lanczos (full
  reorthogonalisation, ``--lanczos`` steps) on ``net.hvp`` and on
  ``jax.jvp(jax.grad(net.loss))``, from the same start vector;
* quantiles of the per-example gradient norms, ``net.per_example_grad_norms``
  against the norms of ``jax.vmap(jax.grad(...))``.

    python scripts/curvature.py                       # table
    python scripts/curvature.py --plot curvature.png  # and a figure (needs matplotlib)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from funcnn import config as C
from funcnn import experiment, optim

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "digits.toml"


def lanczos_top(matvec, n, steps, k, key):
    """The ``k`` largest Ritz values of a symmetric operator after ``steps`` Lanczos steps."""
    q = jax.random.normal(key, (n,))
    q = q / jnp.linalg.norm(q)
    Q, alphas, betas = [q], [], []
    for j in range(steps):
        w = matvec(Q[-1])
        alphas.append(float(w @ Q[-1]))
        Qm = jnp.stack(Q)
        w = w - Qm.T @ (Qm @ w)  # full reorthogonalisation: Ritz values stay honest in float32
        b = float(jnp.linalg.norm(w))
        if j == steps - 1 or b < 1e-8:
            break
        betas.append(b)
        Q.append(w / b)
    T = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1], -1)
    return np.sort(np.linalg.eigvalsh(T))[::-1][:k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--lanczos", type=int, default=20)
    ap.add_argument("--plot", default=None, help="save a figure here (needs matplotlib)")
    args = ap.parse_args()

    cfg = C.load_config(CONFIG, ["training.batch_size=0"])
    split = experiment.load_split(cfg)
    net = C.build_model(cfg.model)
    x, y = split.x_train, experiment.targets(net, split.y_train)
    params = net.init(jax.random.key(0), dtype=x.dtype)
    _, unravel = ravel_pytree(params)
    opt = optim.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def epoch(p, s):  # one full-batch Adam step per "epoch": enough to move the curvature
        u, s = opt.update(net.grad(p, x, y), s, p)
        return optim.apply_updates(p, u), s

    ours_hvp = jax.jit(lambda p, v: ravel_pytree(net.hvp(p, x, y, unravel(v)))[0])
    auto_hvp = jax.jit(lambda p, v: ravel_pytree(
        jax.jvp(jax.grad(lambda q: net.loss(q, x, y)), (p,), (unravel(v),))[1])[0])
    ours_norms = jax.jit(lambda p: net.per_example_grad_norms(p, x, y))

    @jax.jit
    def auto_norms(p):
        g = jax.vmap(lambda xi, yi: jax.grad(net.loss)(p, xi[None], yi[None]))(x, y)
        return jnp.sqrt(sum(jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1) for a in jax.tree.leaves(g)))

    n = ravel_pytree(params)[0].size
    rows = []
    print(f"{'epoch':>5} {'loss':>8}  top-3 eigenvalues net.hvp | autodiff            "
          f"grad-norm quantiles 10/50/90% net | autodiff")
    for e in range(args.epochs + 1):
        if e % args.every == 0:
            key = jax.random.key(e)
            ev_o = lanczos_top(lambda v, p=params: ours_hvp(p, v), n, args.lanczos, 3, key)
            ev_a = lanczos_top(lambda v, p=params: auto_hvp(p, v), n, args.lanczos, 3, key)
            no, na = np.asarray(ours_norms(params)), np.asarray(auto_norms(params))
            qo, qa = np.quantile(no, [0.1, 0.5, 0.9]), np.quantile(na, [0.1, 0.5, 0.9])
            loss = float(net.loss(params, x, y))
            rows.append((e, loss, ev_o, ev_a, no, na))
            print(f"{e:5d} {loss:8.4f}  {np.array2string(ev_o, precision=3)} | "
                  f"{np.array2string(ev_a, precision=3)}   {np.array2string(qo, precision=3)} | "
                  f"{np.array2string(qa, precision=3)}  (max |norm diff| {np.max(np.abs(no - na)):.1e})")
        if e < args.epochs:
            params, state = epoch(params, state)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot([r[0] for r in rows], [r[2][0] for r in rows], "o-", label="net.hvp")
        a1.plot([r[0] for r in rows], [r[3][0] for r in rows], "x--", label="jax.jvp(jax.grad)")
        a1.set(xlabel="epoch", ylabel="top Hessian eigenvalue", title="Lanczos on the HVP")
        a1.legend()
        for r in rows:
            a2.hist(r[4], bins=40, histtype="step", label=f"epoch {r[0]}")
        a2.set(xlabel="per-example gradient norm", ylabel="count", title="net.per_example_grad_norms")
        a2.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"figure written to {args.plot}")


if __name__ == "__main__":
    main()
