"""Gradient check: the hand-derived gradient against three independent references.

``funcnn.gradcheck(net, params, x, y)`` (this module is callable) compares
``net.grad`` with

* ``reverse``: ``jax.grad`` of ``net.loss`` (automatic differentiation of the
  forward pass alone, which never runs our backward),
* ``forward``: forward-mode JVPs, one per parameter entry, in chunks,
* ``finite_diff``: central differences in float64, whatever the check's dtype.

and returns a ``GradcheckReport``: one ``Comparison`` row per (leaf, reference),
addressed by the leaf's pytree path (``[0]['W']``), with the maximum absolute
error, the maximum relative error, the cosine similarity and the index of the
worst entry, judged against the documented ``TOLERANCES``. ``str(report)`` is a
readable table; ``report.passed`` is what a script tests.

Why not ``jax.test_util.check_grads``: it probes one random direction with a
fixed step and raises a bare assertion; a wrong derivative in one unit of one
layer can hide in a random projection, and the failure says nothing about where.

Relative error is normwise per leaf: ``max|a - b| / max|b|``. Elementwise
relative errors explode on entries that are zero up to rounding (dead ReLU
units), which says nothing about the backward pass.

Finite differences: ``(L(theta + h e_i) - L(theta - h e_i)) / 2h`` in float64
with ``h = FD_STEP * max(1, |theta_i|)``, ``FD_STEP = eps**(1/3) ~ 6e-6``: the
step that balances the O(h^2) truncation error against the O(eps/h) rounding
error of the float64 loss. The ``eps_sweep`` in the report checks the choice:
it recomputes the differences over a range of steps on a subset of entries and
reports where the error curve has its minimum. Near a kink (relu, leaky_relu,
elu) the difference quotient averages two slopes and is wrong by design; such
entries are found by comparing the quotients at h and 2h (on a smooth function
they agree to O(h^2)) and are excluded and counted, not hidden.
"""
from __future__ import annotations

import sys
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from funcnn import _checks

# Normwise relative tolerance per (reference, dtype of the check). float64
# agreement is rounding-level; float32 allows reductions summed in another
# order over a few thousand terms; finite differences carry their own
# O(eps^(2/3)) error even in float64.
TOLERANCES = {
    ("reverse", "float64"): 1e-10,
    ("forward", "float64"): 1e-10,
    ("finite_diff", "float64"): 1e-6,
    ("reverse", "float32"): 1e-4,
    ("forward", "float32"): 1e-4,
    ("finite_diff", "float32"): 1e-4,
}
FD_STEP = float(np.finfo(np.float64).eps ** (1 / 3))
SWEEP_STEPS = tuple(10.0 ** -k for k in range(1, 11))
_KINKED = ("relu", "leaky_relu", "elu")
_CHUNK = 256  # parameter directions per vmapped call: bounds memory at chunk x batch x width.


class Comparison(NamedTuple):
    """The hand-derived gradient of one leaf against one reference."""

    path: str  # pytree path of the leaf, e.g. "[0]['W']"
    layer: int
    reference: str  # reverse | forward | finite_diff
    max_abs: float  # max_i |manual_i - ref_i|
    max_rel: float  # max_abs / max_i |ref_i|  (normwise, see module docstring)
    cosine: float  # <manual, ref> / (|manual| |ref|); 1.0 when both are zero
    worst_index: tuple  # index of the entry with the largest absolute error
    tolerance: float
    passed: bool
    excluded: int = 0  # finite_diff only: entries at a kink, not compared


class EpsSweep(NamedTuple):
    """Error of plain central differences against reverse mode, per step size."""

    steps: tuple  # h values, largest first
    max_rel: tuple  # normwise relative error over the sampled entries, per h
    num_entries: int

    @property
    def best(self) -> tuple[float, float]:
        """(h, error) at the curve's minimum."""
        i = int(np.nanargmin(self.max_rel))
        return self.steps[i], self.max_rel[i]


class GradcheckReport(NamedTuple):
    """All comparisons of one gradient check."""

    title: str
    dtype: str
    rows: tuple  # Comparison rows, leaf by leaf, references in order
    sweep: EpsSweep | None
    fd_step: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def worst(self, reference: str | None = None) -> Comparison:
        """The row with the largest relative error (optionally for one reference)."""
        rows = [r for r in self.rows if reference is None or r.reference == reference]
        return max(rows, key=lambda r: r.max_rel)

    def __str__(self) -> str:
        head = f"{'leaf':<10} {'reference':<11} {'max abs':>9} {'max rel':>9} {'cosine':>14} " \
               f"{'worst at':<10} {'tol':>7}  result"
        lines = [self.title, head, "-" * len(head)]
        for r in self.rows:
            ok = "pass" if r.passed else "FAIL"
            if r.excluded:
                ok += f" ({r.excluded} at kinks skipped)"
            lines.append(f"{r.path:<10} {r.reference:<11} {r.max_abs:9.2e} {r.max_rel:9.2e} "
                         f"{r.cosine:14.12f} {str(r.worst_index):<10} {r.tolerance:7.0e}  {ok}")
        lines.append(f"finite differences: float64, central, h = {self.fd_step:.1e} * max(1, |theta|)")
        if self.sweep is not None:
            curve = ", ".join(f"{h:.0e}: {e:.1e}" for h, e in zip(self.sweep.steps, self.sweep.max_rel))
            h, e = self.sweep.best
            lines.append(f"eps sweep over {self.sweep.num_entries} entries (max rel error vs reverse): "
                         f"{curve}; minimum {e:.1e} at h = {h:.0e}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _compare(path, layer, reference, a, b, tol, excluded=0, mask=None) -> Comparison:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if mask is not None:  # entries not compared count as agreeing exactly
        a, b = np.where(mask, a, 0.0), np.where(mask, b, 0.0)
    err = np.abs(a - b)
    scale = np.max(np.abs(b)) if b.size else 0.0
    max_abs = float(np.max(err)) if err.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cosine = float(np.dot(a.ravel(), b.ravel()) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(err)), err.shape)) if err.size else ()
    return Comparison(path, layer, reference, max_abs, float(max_rel), cosine, worst, tol,
                      bool(max_rel <= tol), excluded)


def _chunked(fn, n):
    """Applies fn to index chunks [i, i + _CHUNK) and concatenates the results.

    fn(i, j) must return _CHUNK rows (the ones past j - i are padding): every
    chunk then has one shape, so each vmapped function compiles once.
    """
    return np.concatenate([np.asarray(fn(i, min(i + _CHUNK, n)))[: min(_CHUNK, n - i)]
                           for i in range(0, n, _CHUNK)])


def gradcheck(net, params, x, y, *, key=None, dtype=None, sweep_entries: int = 64,
              max_entries: int | None = None, manual_grad=None) -> GradcheckReport:
    """Checks ``net.grad`` against reverse mode, forward mode and finite differences.

    Args:
      net: an ``MLP`` from ``funcnn.mlp``.
      params: its parameters.
      x: inputs ``[n, sizes[0]]``.
      y: targets, as for ``net.loss``.
      key: dropout key; the same masks are used by every method.
      dtype: ``"float32"`` or ``"float64"``: the precision of the manual,
        reverse and forward gradients (default: the dtype of ``params``).
        Finite differences are always taken in float64.
      sweep_entries: number of entries in the eps sweep (0 to skip it).
      max_entries: per leaf, check at most this many entries by forward mode
        and finite differences (half the largest-gradient entries, half drawn
        at random with a fixed seed); None checks every entry. Reverse mode
        always compares every entry. Each entry costs one JVP and 2-4 loss
        evaluations, so this bounds the cost of big networks.
      manual_grad: the gradient function under test, ``(params, x, y, key=)``;
        default ``net.grad``. Tests pass a deliberately broken one here.

    Returns:
      A ``GradcheckReport``; ``report.passed`` is True when every row is
      within its tolerance.

    Raises:
      ValueError: ``dtype`` not float32/float64; the network's own input errors.
    """
    if dtype is None:
        dtype = str(jax.tree.leaves(params)[0].dtype)
    dtype = str(jnp.dtype(dtype)) if dtype in ("float32", "float64", jnp.float32, jnp.float64) else dtype
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}.")
    manual_grad = net.grad if manual_grad is None else manual_grad
    # float64 needs x64; enable it for the duration of the check only, so the
    # caller's global setting is left alone.
    with jax.enable_x64(True):
        return _gradcheck(net, params, x, y, key, dtype, sweep_entries, max_entries, manual_grad)


def _entries(manual, max_entries):
    """Flat indices to check by forward mode and finite differences (sorted)."""
    leaves = [np.asarray(l, np.float64).ravel() for l in jax.tree.leaves(manual)]
    rng = np.random.default_rng(0)
    picks, start = [], 0
    for leaf in leaves:
        n = leaf.size
        if max_entries is None or n <= max_entries:
            picks.append(start + np.arange(n))
        else:
            top = np.argsort(-np.abs(leaf))[: max_entries // 2]
            rest = np.setdiff1d(np.arange(n), top)
            picks.append(start + np.sort(np.concatenate([top, rng.choice(rest, max_entries - top.size,
                                                                         replace=False)])))
        start += n
    return np.concatenate(picks)


def _gradcheck(net, params, x, y, key, dtype, sweep_entries, max_entries, manual_grad):
    cast = lambda t, d: jax.tree.map(lambda a: jnp.asarray(a, d), t)
    is_float_y = jnp.issubdtype(jnp.asarray(y).dtype, jnp.floating)
    p, xx = cast(params, dtype), jnp.asarray(x, dtype)
    yy = jnp.asarray(y, dtype) if is_float_y else jnp.asarray(y)
    loss = lambda q: net.loss(q, xx, yy, key=key)

    # Value checks the jitted calls below would skip: the inputs must be valid.
    _checks.finite("x", xx)
    if not is_float_y:
        _checks.labels_in_range("y", yy, net.spec.sizes[-1])
    # Jitted, not eager: eager mode compiles every primitive at a new shape,
    # which costs more than the check itself.
    manual = jax.jit(lambda q: manual_grad(q, xx, yy, key=key))(p)
    reverse = jax.jit(jax.grad(loss))(p)

    theta, unravel = ravel_pytree(p)
    P = theta.size
    idx = _entries(manual, max_entries)
    checked = np.zeros(P, bool)
    checked[idx] = True

    def basis(i, j):  # rows e_idx[i] .. e_idx[j-1], zero rows after
        E = np.zeros((_CHUNK, P), np.asarray(theta).dtype)
        E[np.arange(j - i), idx[i:j]] = 1
        return jnp.asarray(E)
    jvp = jax.jit(lambda E: jax.vmap(lambda e: jax.jvp(lambda t: loss(unravel(t)), (theta,), (e,))[1])(E))
    fwd_flat = np.zeros(P, np.asarray(theta).dtype)
    fwd_flat[idx] = _chunked(lambda i, j: jvp(basis(i, j)), len(idx))
    forward = unravel(jnp.asarray(fwd_flat))

    # Finite differences, float64 throughout.
    p64 = cast(params, jnp.float64)
    x64 = jnp.asarray(x, jnp.float64)
    y64 = jnp.asarray(y, jnp.float64) if is_float_y else jnp.asarray(y)
    th64, unravel64 = ravel_pytree(p64)
    loss64 = jax.jit(jax.vmap(lambda t: net.loss(unravel64(t), x64, y64, key=key)))
    scale = np.maximum(1.0, np.abs(np.asarray(th64)))

    def central(h_rel, idx):
        """Central differences at entries idx with steps h_rel * scale."""
        def chunk(i, j):
            E = np.zeros((_CHUNK, P))
            rows = np.arange(j - i)
            h = np.ones(_CHUNK)  # padding rows: zero perturbation, any h
            h[rows] = h_rel * scale[idx[i:j]]
            E[rows, idx[i:j]] = h[rows]
            return (loss64(th64[None, :] + E) - loss64(th64[None, :] - E)) / (2 * h)
        return _chunked(chunk, len(idx))

    fd = np.zeros(P)
    fd[idx] = central(FD_STEP, idx)
    kinked = np.zeros(P, bool)
    if net.spec.hidden in _KINKED:
        fd2 = central(2 * FD_STEP, idx)
        # Smooth: fd and fd2 differ by O(h^2) ~ 1e-10 relative. Across a kink
        # they differ by a share of the slope jump, orders of magnitude more.
        kinked[idx] = np.abs(fd[idx] - fd2) > 1e-6 * max(np.max(np.abs(fd)), 1e-300)

    sweep = None
    if sweep_entries:
        rev_flat = np.asarray(ravel_pytree(cast(reverse, jnp.float64))[0])
        rng = np.random.default_rng(0)
        pick = np.unique(np.concatenate([idx[np.argsort(-np.abs(rev_flat[idx]))][: sweep_entries // 2],
                                         rng.choice(idx, min(idx.size, sweep_entries), replace=False)]))
        pick = pick[~kinked[pick]][:sweep_entries]
        ref = rev_flat[pick]
        errs = [float(np.max(np.abs(central(h, pick) - ref)) / max(np.max(np.abs(ref)), 1e-300))
                for h in SWEEP_STEPS]
        sweep = EpsSweep(SWEEP_STEPS, tuple(errs), len(pick))

    as_tree = lambda v: unravel64(jnp.asarray(v, jnp.float64))
    fd_tree, kink_tree, checked_tree = as_tree(fd), as_tree(kinked), as_tree(checked)
    rows = []
    flat_manual = jax.tree_util.tree_flatten_with_path(manual)[0]
    others = [jax.tree.leaves(t) for t in (reverse, forward, fd_tree, kink_tree, checked_tree)]
    for k, (path, a) in enumerate(flat_manual):
        name = jax.tree_util.keystr(path)
        layer = int(getattr(path[0], "idx", 0))
        rev, fwd, fdl, kink, chk = (o[k] for o in others)
        kink, chk = np.asarray(kink) > 0, np.asarray(chk) > 0
        rows.append(_compare(name, layer, "reverse", a, rev, TOLERANCES[("reverse", dtype)]))
        rows.append(_compare(name, layer, "forward", a, fwd, TOLERANCES[("forward", dtype)], mask=chk))
        rows.append(_compare(name, layer, "finite_diff", a, fdl, TOLERANCES[("finite_diff", dtype)],
                             excluded=int(kink.sum()), mask=chk & ~kink))
    s = net.spec
    title = (f"gradcheck: {'-'.join(map(str, s.sizes))} {s.hidden}/{s.output}/{s.loss}"
             f"{f' l2={s.l2:g}' if s.l2 else ''}{f' dropout={s.dropout:g}' if s.dropout and key is not None else ''}, "
             f"dtype {dtype}, batch {xx.shape[0]}, {P} parameters"
             + (f" ({idx.size} checked by forward mode and finite differences)" if idx.size < P else ""))
    return GradcheckReport(title, dtype, tuple(rows), sweep, FD_STEP)


class _CallableModule(types.ModuleType):
    """Lets ``funcnn.gradcheck`` be both this module and its main function."""

    def __call__(self, *args, **kwargs) -> GradcheckReport:
        return gradcheck(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
