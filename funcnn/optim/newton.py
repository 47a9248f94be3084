"""Hessian-free optimisation (truncated Newton on Gauss-Newton products), written in JAX.

The algorithm is Martens, *Deep learning via Hessian-free optimization*
(ICML 2010), in its plain form:

* Each outer iteration at ``x`` with gradient ``g`` approximately solves
  ``(G + lambda I) d = -g`` by conjugate gradient (Hestenes & Stiefel), where
  ``G`` is the Gauss-Newton matrix (PSD), applied only through products
  ``G v`` (``net.gnvp``), never formed. CG starts from ``d = 0`` and stops
  when the residual is small relative to the gradient,
  ``||r|| <= cg_tol ||g||``, after ``max_cg_iters`` iterations, or if a
  direction has no positive curvature (a safeguard: with ``lambda > 0`` it
  cannot happen in exact arithmetic).
* Levenberg-Marquardt damping by the reduction ratio
  ``rho = (f(x + d) - f(x)) / q(d)``, with ``q(d) = g'd + d'G d / 2`` the
  undamped quadratic model's predicted change (``G d`` comes free from the
  CG residual: ``(G + lambda I) d = -g - r``): ``lambda *= 3/2`` when
  ``rho < 1/4``, ``lambda *= 2/3`` when ``rho > 3/4`` (Martens' constants).
* The step is taken only if it decreases ``f``; otherwise ``x`` stays and
  the larger damping makes the next step shorter and more gradient-like.
  Martens' CG warm start from the previous direction and his CG
  backtracking are left out: the simplest version that is still his method.

Convergence: ``||g||_2 <= tol``. Everything is a ``lax.while_loop``, so
``jax.jit`` compiles the whole minimisation. Cost per outer iteration: one
``value_and_grad`` evaluation and at most ``max_cg_iters`` Gauss-Newton
products (each about the cost of one gradient: one forward-mode and one
reverse pass).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from funcnn import _checks
from funcnn.typing import Array, Params


class HessianFreeResult(NamedTuple):
    """The outcome of ``hessian_free``."""

    params: Params  # same pytree, shapes and dtypes as x0; the best (last accepted) iterate
    value: Array  # shape=(), x0's dtype; f(params)
    grad_norm: Array  # shape=(), x0's dtype; ||grad f(params)||_2
    iterations: Array  # shape=(), int32; outer iterations done
    num_evals: Array  # shape=(), int32; calls of value_and_grad_fn, the first included
    num_gnvps: Array  # shape=(), int32; Gauss-Newton products, over all CG runs
    damping: Array  # shape=(), x0's dtype; lambda at the end
    converged: Array  # shape=(), bool; grad_norm <= tol
    losses: Array  # shape=[max_iters + 1], x0's dtype; f at the start and after each iteration, NaN after the last


class _State(NamedTuple):
    k: Array  # shape=(), int32; outer iterations done
    x: Array  # shape=[n]
    f: Array  # shape=()
    g: Array  # shape=[n]
    lam: Array  # shape=(); damping lambda
    evals: Array  # shape=(), int32
    gnvps: Array  # shape=(), int32
    losses: Array  # shape=[max_iters + 1]; losses[k] = f after k iterations (a fixed size, so it can be jitted)


def _cg(Av, b, lam, *, tol, max_iters):
    """``(d, r, iterations)``: CG on ``(A + lam I) d = b`` from d = 0, stopped at ``||r|| <= tol ||b||``."""
    stop = (tol * jnp.linalg.norm(b)) ** 2

    def cond(s):
        i, _, r, p, rr = s
        return (i < max_iters) & (rr > stop) & jnp.all(jnp.isfinite(p))

    def body(s):
        i, d, r, p, rr = s
        Ap = Av(p) + lam * p
        pAp = p @ Ap
        ok = pAp > 0  # no positive curvature along p: stop with the current d
        alpha = jnp.where(ok, rr / jnp.where(ok, pAp, 1), 0)
        d, r = d + alpha * p, r - alpha * Ap
        rr_new = r @ r
        p = jnp.where(ok, r + rr_new / rr * p, jnp.nan)  # NaN ends the loop (cond)
        return i + 1, d, r, p, jnp.where(ok, rr_new, rr)

    zero = jnp.zeros_like(b)
    i, d, r, _, _ = lax.while_loop(cond, body, (jnp.int32(0), zero, b, b, b @ b))
    return d, r, i


def hessian_free(
    value_and_grad_fn: Callable[[Params], tuple[Array, Params]],
    gnvp_fn: Callable[[Params, Params], Params],
    x0: Params,
    *,
    max_iters: int = 50,
    max_cg_iters: int = 50,
    cg_tol: float = 1e-2,
    damping: float = 1.0,
    tol: float = 1e-6,
) -> HessianFreeResult:
    """Minimises ``f`` by Hessian-free optimisation (Martens 2010); see the module docstring.

    Per outer iteration::

        d ~ -(G + lambda I)^-1 g       CG on G products, ||r|| <= cg_tol ||g||, <= max_cg_iters
        rho = (f(x + d) - f(x)) / (g'd + d'G d / 2)
        lambda *= 3/2 if rho < 1/4;  lambda *= 2/3 if rho > 3/4
        x <- x + d if f(x + d) < f(x)

    Full batch (or one large mini-batch closed over): ``value_and_grad_fn``
    and ``gnvp_fn`` must be deterministic. Jittable as a whole.

    Args:
      value_and_grad_fn: ``params -> (value, grads)``, e.g.
        ``lambda p: net.value_and_grad(p, x, y)``.
      gnvp_fn: ``(params, v) -> G v``, a PSD curvature product, e.g.
        ``lambda p, v: net.gnvp(p, x, y, v)``.
      x0: the starting point, a pytree of float arrays.
      max_iters: the most outer iterations, a positive int.
      max_cg_iters: the most CG iterations (Gauss-Newton products) per outer
        iteration, a positive int.
      cg_tol: CG's relative-residual stop, > 0.
      damping: the initial lambda, > 0.
      tol: stop when ``||grad||_2 <= tol``, > 0.

    Returns:
      A ``HessianFreeResult``; ``losses[:iterations + 1]`` is the loss curve,
      one value per outer iteration.

    Raises:
      TypeError: a function that is not callable, or ``x0`` not floating.
      ValueError: a non-positive count or number, named.

    >>> import jax, jax.numpy as jnp
    >>> f = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> res = hessian_free(jax.value_and_grad(f), lambda p, v: 2.0 * v, jnp.zeros(2), damping=1e-3)
    >>> [round(float(a), 4) for a in res.params]
    [3.0, 3.0]
    """
    for name, fn in (("value_and_grad_fn", value_and_grad_fn), ("gnvp_fn", gnvp_fn)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable; got {fn!r}.")
    max_iters = _checks.positive_int("max_iters", max_iters)
    max_cg_iters = _checks.positive_int("max_cg_iters", max_cg_iters)
    cg_tol = _checks.number("cg_tol", cg_tol, low=0.0, low_open=True)
    damping = _checks.number("damping", damping, low=0.0, low_open=True)
    tol = _checks.number("tol", tol, low=0.0, low_open=True)

    x, unravel = ravel_pytree(x0)
    _checks.floating("x0", x)
    dtype = x.dtype

    def fg(v):
        f, g = value_and_grad_fn(unravel(v))
        return jnp.asarray(f, dtype), ravel_pytree(g)[0].astype(dtype)

    f0, g0 = fg(x)

    def cond(s):
        return (s.k < max_iters) & (jnp.linalg.norm(s.g) > tol)

    def body(s):
        p = unravel(s.x)

        def Gv(v):
            return ravel_pytree(gnvp_fn(p, unravel(v)))[0].astype(dtype)

        d, r, used = _cg(Gv, -s.g, s.lam, tol=cg_tol, max_iters=max_cg_iters)
        # (G + lam I) d = -g - r, so d'G d = d'(-g - r) - lam d'd.
        q = s.g @ d + 0.5 * (d @ (-s.g - r) - s.lam * (d @ d))
        f1, g1 = fg(s.x + d)
        rho = jnp.where(q < 0, (f1 - s.f) / jnp.where(q < 0, q, -1), -jnp.inf)
        lam = jnp.where(rho < 0.25, s.lam * 1.5, jnp.where(rho > 0.75, s.lam * (2.0 / 3.0), s.lam))
        take = jnp.isfinite(f1) & (f1 < s.f)
        f = jnp.where(take, f1, s.f)
        return _State(s.k + 1, jnp.where(take, s.x + d, s.x), f, jnp.where(take, g1, s.g), lam.astype(dtype),
                      s.evals + 1, s.gnvps + used, s.losses.at[s.k + 1].set(f))

    s0 = _State(jnp.int32(0), x, f0, g0, jnp.asarray(damping, dtype), jnp.int32(1), jnp.int32(0),
                jnp.full([max_iters + 1], jnp.nan, dtype).at[0].set(f0))
    s = lax.while_loop(cond, body, s0)
    gn = jnp.linalg.norm(s.g)
    return HessianFreeResult(unravel(s.x), s.f, gn, s.k, s.evals, s.gnvps, s.lam, gn <= tol, s.losses)


__all__ = ["HessianFreeResult", "hessian_free"]
