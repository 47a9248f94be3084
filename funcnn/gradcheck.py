"""Gradient checks: a hand-derived gradient against three independent references.

``funcnn.gradcheck(net, params, x, y)`` (this module is callable) compares
``net.grad`` with

* ``reverse``: ``jax.grad`` of ``net.loss`` (automatic differentiation of the
  forward pass alone, which never runs our backward),
* ``forward``: forward-mode JVPs, one per checked entry, in chunks,
* ``finite_diff``: central differences in float64, whatever the check's dtype.

The same machinery proves any piece a user brings:

* ``check_layer(layer, params, x)``: a ``Layer``'s backward against
  ``jax.vjp`` of its forward, for params and x, with random cotangents;
* ``check_activation(act)``: an ``Activation``'s derivative (or an
  ``OutputActivation``'s VJP) over a grid of points, near 0 and at large |z|;
* ``check_loss(loss, output, z, t)``: a loss's gradient with respect to the
  logits (and to float targets);
* ``check_vjp(f, *args)``: ANY function decorated with ``jax.custom_vjp``:
  its custom rule (``jax.vjp(f, ...)``) against automatic differentiation of
  the undecorated primal ``f.fun``, forward mode and finite differences, per
  input leaf and for several random cotangents.

Each returns a ``GradcheckReport``: one ``Comparison`` row per (leaf,
reference), addressed by the leaf's pytree path (``[0]['W']``) and naming the
piece it belongs to, with the maximum absolute error, the maximum relative
error, the cosine similarity and the index of the worst entry, judged against
the documented ``TOLERANCES``. ``str(report)`` is a readable table;
``report.passed`` is what a script tests; ``report.failed_pieces`` names what
is wrong.

Why not ``jax.test_util.check_grads``: it probes one random direction with a
fixed step and raises a bare assertion; a wrong derivative in one unit of one
layer can hide in a random projection, and the failure says nothing about
where. It checks JAX's own rules against each other, so a ``custom_vjp``
whose rule is wrong *and* whose primal is differentiated by the same rule
cannot be caught; ``check_vjp`` differentiates the undecorated primal.

Relative error is normwise per leaf: ``max|a - b| / max|b|``. Elementwise
relative errors explode on entries that are zero up to rounding (dead ReLU
units), which says nothing about the backward pass.

Finite differences: ``(L(theta + h e_i) - L(theta - h e_i)) / 2h`` in float64
with ``h = FD_STEP * max(1, |theta_i|)``, ``FD_STEP = eps**(1/3) ~ 6e-6``: the
step that balances the O(h^2) truncation error against the O(eps/h) rounding
error of the float64 loss. The ``eps_sweep`` in the report checks the choice:
it recomputes the differences over a range of steps on a subset of entries and
reports where the error curve has its minimum. Near a kink (relu, leaky_relu,
elu, or any piece not declared ``smooth``) the difference quotient averages
two slopes and is wrong by design; such entries are found by comparing the
quotients at h and 2h (on a smooth function they agree to O(h^2)) and the
one-sided quotients (which differ by the slope's jump across a kink exactly
at theta_i), and are excluded and counted, not hidden.
"""
from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from funcnn import _checks, activations, losses
from funcnn.activations import Activation, OutputActivation
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.layers import Layer
from funcnn.network import describe

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
REFERENCES = ("reverse", "forward", "finite_diff")
FD_STEP = float(np.finfo(np.float64).eps ** (1 / 3))
SWEEP_STEPS = tuple(10.0 ** -k for k in range(1, 11))
# Grid for check_activation: both signs, near 0 (where kinks and cancellations
# live) and large |z| (where naive formulas overflow or lose their tails). Not
# 0 itself: a derivative at a kink is a convention, and so is autodiff's there
# (jnp.maximum and jnp.minimum split ties 0.5/0.5), so no reference is the
# truth at 0; tests/test_activations.py checks funcnn's convention at 0 directly.
ACTIVATION_GRID = tuple(sorted(s * v for s in (-1.0, 1.0) for v in
                               (1e-6, 1e-3, 0.1, 0.5, 1.0, 1.7, 3.0, 6.0, 12.0, 30.0)))
_CHUNK = 256  # parameter directions per step of the compiled loop: bounds memory at chunk x batch x width.


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
    excluded: int = 0  # entries at a kink, not compared (finite_diff; every reference for activations)
    piece: str = ""  # the piece the leaf belongs to, e.g. "dense(128, relu)"


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

    @property
    def failed_pieces(self) -> tuple[str, ...]:
        """The pieces with a failing row, in the order they appear."""
        return tuple(dict.fromkeys(r.piece for r in self.rows if not r.passed))

    def worst(self, reference: str | None = None) -> Comparison:
        """The row with the largest relative error (optionally for one reference)."""
        rows = [r for r in self.rows if reference is None or r.reference == reference]
        return max(rows, key=lambda r: r.max_rel)

    def __str__(self) -> str:
        width = max([10] + [len(r.path) for r in self.rows])
        pw = max([5] + [len(r.piece) for r in self.rows])
        head = f"{'leaf':<{width}} {'piece':<{pw}} {'reference':<11} {'max abs':>9} {'max rel':>9} " \
               f"{'cosine':>14} {'worst at':<10} {'tol':>7}  result"
        lines = [self.title, head, "-" * len(head)]
        for r in self.rows:
            ok = "pass" if r.passed else "FAIL"
            if r.excluded:
                ok += f" ({r.excluded} at kinks skipped)"
            lines.append(f"{r.path:<{width}} {r.piece:<{pw}} {r.reference:<11} {r.max_abs:9.2e} "
                         f"{r.max_rel:9.2e} {r.cosine:14.12f} {str(r.worst_index):<10} {r.tolerance:7.0e}  {ok}")
        lines.append(f"finite differences: float64, central, h = {self.fd_step:.1e} * max(1, |theta|)")
        if self.sweep is not None:
            curve = ", ".join(f"{h:.0e}: {e:.1e}" for h, e in zip(self.sweep.steps, self.sweep.max_rel))
            h, e = self.sweep.best
            lines.append(f"eps sweep over {self.sweep.num_entries} entries (max rel error vs reverse): "
                         f"{curve}; minimum {e:.1e} at h = {h:.0e}")
        if not self.passed:
            lines.append("wrong derivative in: " + ", ".join(p or "(unnamed)" for p in self.failed_pieces))
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _compare(path, layer, reference, a, b, tol, excluded=0, mask=None, piece="") -> Comparison:
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
                      bool(max_rel <= tol), excluded, piece)


def _dtype_name(dtype, default) -> str:
    if dtype is None:
        dtype = default
    dtype = str(jnp.dtype(dtype)) if dtype in ("float32", "float64", jnp.float32, jnp.float64) else dtype
    if dtype not in ("float32", "float64"):
        raise InvalidArgument(f"dtype must be 'float32' or 'float64'; got {dtype!r}.")
    return dtype


def _cast(tree, dtype):
    """Float leaves to ``dtype``; integer leaves (labels) unchanged.

    Converted on the host (the leaves are concrete): an eager ``astype`` would
    compile a program per shape and dtype.
    """
    dtype = jnp.dtype(dtype)

    def cast(a):
        a = a if isinstance(a, jax.Array) else np.asarray(a)
        if not jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.asarray(a)
        return a if isinstance(a, jax.Array) and a.dtype == dtype else jax.device_put(np.asarray(a).astype(dtype))

    return jax.tree.map(cast, tree)


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
    return np.concatenate(picks) if picks else np.zeros(0, int)


class _Problem(NamedTuple):
    """A scalar function of a pytree ``theta`` and the hand-derived gradient under test."""

    value: Callable  # theta (check dtype) -> scalar
    value64: Callable  # theta (float64) -> scalar, for finite differences
    theta: object  # the point, in the check dtype
    theta64: object  # the same point in float64
    manual: object  # the hand-derived gradient at theta, like theta
    smooth: bool  # no kinks: skip kink detection
    name: Callable  # path -> row name
    piece: Callable  # path -> piece name
    layer: Callable  # path -> layer index
    # Data the value functions take after theta (value(theta, *args)): passed as
    # arguments, not closed over, so the compiled programs serve every call.
    args: tuple = ()
    args64: tuple = ()


def _padded(a, fill=0):
    """``a`` padded with ``fill`` to a size that few distinct calls share.

    Sizes round up to a multiple of 32 below ``_CHUNK`` and of ``_CHUNK``
    above, so checks of similar size reuse one compiled program and ``_map``
    never compiles a remainder; the padding rows are computed and dropped.
    """
    a = np.asarray(a)
    step = 32 if a.size <= _CHUNK else _CHUNK
    size = max(step, -(-a.size // step) * step)
    return np.concatenate([a, np.full(size - a.size, fill, a.dtype)])


def _map(f, xs):
    """``f`` over the rows of ``xs``: one vmap up to ``_CHUNK`` rows, else ``_CHUNK`` rows per step of a loop.

    The loop bounds memory at chunk x batch x width whatever the number of rows.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    return jax.vmap(f)(xs) if n <= _CHUNK else jax.lax.map(f, xs, batch_size=_CHUNK)


def _split_like(flat, leaves):
    """A flat vector cut into arrays shaped like ``leaves`` (the inverse of concatenating their ravels)."""
    out, start = [], 0
    for leaf in leaves:
        size = int(np.size(leaf))
        out.append(np.asarray(flat[start:start + size]).reshape(np.shape(leaf)))
        start += size
    return out


@functools.partial(jax.jit, static_argnums=0)
def _autodiff(value, theta, args, idx):
    """``(jax.grad(value)(theta, *args), [JVP along e_i for i in idx])``: one compiled program."""
    reverse = jax.grad(value)(theta, *args)
    flat, unravel = ravel_pytree(theta)

    def jvp(i):
        e = jnp.zeros_like(flat).at[i].set(1)
        return jax.jvp(lambda t: value(unravel(t), *args), (flat,), (e,))[1]

    return reverse, _map(jvp, idx)


@functools.partial(jax.jit, static_argnums=0)
def _shifted_values(value64, theta64, args64, idx, h):
    """``[value64(theta64 + h_k e_{idx_k}, *args64) for k]`` in float64: one compiled program."""
    flat, unravel = ravel_pytree(theta64)
    return _map(lambda ih: value64(unravel(flat.at[ih[0]].add(ih[1])), *args64), (idx, h))


def _run(prob: _Problem, dtype: str, max_entries, sweep_entries: int, kinks_everywhere: bool = False):
    """Rows (per leaf, per reference) and the eps sweep for one problem.

    Two compiled programs do all the numerical work, whatever the number of
    entries: ``_autodiff`` (reverse mode and every forward-mode JVP, in the
    check's dtype) and ``_shifted_values`` (every loss evaluation the finite
    differences, the kink detection and the eps sweep need, in float64). Both
    take the data as arguments, so a second check of the same problem function
    at the same shapes reuses them.
    """
    P = sum(int(np.size(a)) for a in jax.tree.leaves(prob.theta))
    idx = _entries(prob.manual, max_entries)
    checked = np.zeros(P, bool)
    checked[idx] = True
    reverse, fwd = _autodiff(prob.value, prob.theta, tuple(prob.args), _padded(idx))
    fwd_flat = np.zeros(P, np.asarray(fwd).dtype)
    fwd_flat[idx] = np.asarray(fwd)[: idx.size]
    forward = jax.tree.unflatten(jax.tree.structure(prob.theta),
                                 _split_like(fwd_flat, jax.tree.leaves(prob.theta)))
    rev_flat = np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree.leaves(reverse)] or
                              [np.zeros(0)])
    fd, kinked, sweep = _finite_differences(prob, idx, rev_flat, sweep_entries)
    rows = _rows(prob, dtype, reverse, forward, fd, kinked, checked, kinks_everywhere)
    return rows, sweep, idx.size, P


def _finite_differences(prob: _Problem, idx, rev_flat, sweep_entries: int):
    """Central differences at the entries ``idx``, the kinks among them and the eps sweep.

    Float64 throughout, every shifted point in one call of ``_shifted_values``.
    Returns ``(fd [P], kinked [P] bool, EpsSweep or None)``.
    """
    th64 = np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree.leaves(prob.theta64)] or
                          [np.zeros(0)])
    P = th64.size
    scale = np.maximum(1.0, np.abs(th64))
    kink_check = not prob.smooth and idx.size > 0
    points = [(idx, FD_STEP * scale[idx]), (idx, -FD_STEP * scale[idx])]
    if kink_check:
        points += [(idx, 2 * FD_STEP * scale[idx]), (idx, -2 * FD_STEP * scale[idx]), (np.zeros(1, int), np.zeros(1))]
    cand = np.zeros(0, int)
    if sweep_entries and idx.size:
        # Candidates: half the largest reverse-mode entries, plus a fixed-seed draw; the
        # ones at kinks are dropped below. Evaluated with repeats, so the number of
        # points (and so the compiled program) does not depend on the values.
        rng = np.random.default_rng(0)
        cand = np.concatenate([idx[np.argsort(-np.abs(rev_flat[idx]))][: sweep_entries // 2],
                               rng.choice(idx, min(idx.size, sweep_entries), replace=False)])
        points += [(cand, s * h * scale[cand]) for h in SWEEP_STEPS for s in (1.0, -1.0)]
    at = np.concatenate([p[0] for p in points]) if points else np.zeros(0, int)
    steps = np.concatenate([p[1] for p in points]) if points else np.zeros(0)
    values = np.asarray(_shifted_values(prob.value64, prob.theta64, tuple(prob.args64), _padded(at),
                                        _padded(steps)))[: at.size]
    n = idx.size
    plus, minus, h = values[:n], values[n:2 * n], FD_STEP * scale[idx]
    fd = np.zeros(P)
    fd[idx] = (plus - minus) / (2 * h)
    kinked = np.zeros(P, bool)
    if kink_check:
        fd2 = (values[2 * n:3 * n] - values[3 * n:4 * n]) / (2 * (2 * FD_STEP * scale[idx]))
        f0 = float(values[4 * n])
        top = max(np.max(np.abs(fd)), 1e-300)
        # Smooth: fd and fd2 differ by O(h^2) ~ 1e-10 relative, and the one-sided
        # quotients by O(h) ~ 1e-5. Across a kink they differ by a share of the
        # slope's jump (a kink exactly at theta_i: the whole jump, one-sided).
        kinked[idx] = (np.abs(fd[idx] - fd2) > 1e-6 * top) | \
                      (np.abs((plus - f0) / h - (f0 - minus) / h) > 1e-3 * top)
    sweep = None
    if cand.size:
        curves = values[at.size - 2 * len(SWEEP_STEPS) * cand.size:].reshape(len(SWEEP_STEPS), 2, cand.size)
        sweep = _sweep(curves, cand, kinked, rev_flat, scale, sweep_entries)
    return fd, kinked, sweep


def _sweep(curves, cand, kinked, rev_flat, scale, sweep_entries: int) -> EpsSweep:
    """The eps sweep: the central difference's error against reverse mode at each step of SWEEP_STEPS."""
    uniq, first = np.unique(cand, return_index=True)
    keep = ~kinked[uniq]
    pick, where = uniq[keep][:sweep_entries], first[keep][:sweep_entries]
    ref = rev_flat[pick]
    errs = [float(np.max(np.abs((c[0, where] - c[1, where]) / (2 * hs * scale[pick]) - ref))
                  / max(np.max(np.abs(ref)), 1e-300)) if pick.size else np.nan
            for hs, c in zip(SWEEP_STEPS, curves, strict=True)]
    return EpsSweep(SWEEP_STEPS, tuple(errs), len(pick))


def _rows(prob: _Problem, dtype: str, reverse, forward, fd, kinked, checked, kinks_everywhere: bool) -> list:
    """Three rows per leaf: the manual gradient against reverse mode, forward mode and finite differences."""
    leaves64 = jax.tree.leaves(prob.theta64)
    as_tree = lambda v: jax.tree.unflatten(jax.tree.structure(prob.theta64), _split_like(v, leaves64))
    fd_tree, kink_tree, checked_tree = as_tree(fd), as_tree(kinked), as_tree(checked)
    rows = []
    flat_manual = jax.tree_util.tree_flatten_with_path(prob.manual)[0]
    others = [jax.tree.leaves(t) for t in (reverse, forward, fd_tree, kink_tree, checked_tree)]
    for k, (path, a) in enumerate(flat_manual):
        name, piece, layer = prob.name(path), prob.piece(path), prob.layer(path)
        rev, fwd, fdl, kink, chk = (o[k] for o in others)
        kink, chk = np.asarray(kink) > 0, np.asarray(chk) > 0
        skip = int(kink.sum()) if kinks_everywhere else 0
        rows.append(_compare(name, layer, "reverse", a, rev, TOLERANCES[("reverse", dtype)], skip,
                             mask=~kink if kinks_everywhere else None, piece=piece))
        rows.append(_compare(name, layer, "forward", a, fwd, TOLERANCES[("forward", dtype)], skip,
                             mask=chk & ~kink if kinks_everywhere else chk, piece=piece))
        rows.append(_compare(name, layer, "finite_diff", a, fdl, TOLERANCES[("finite_diff", dtype)],
                             excluded=int(kink.sum()), mask=chk & ~kink, piece=piece))
    return rows


def _report(title, dtype, results) -> GradcheckReport:
    """One report from ``[(rows, sweep, checked, P), ...]`` (one per cotangent)."""
    rows = tuple(r for res in results for r in res[0])
    return GradcheckReport(title, dtype, rows, results[0][1], FD_STEP)


# ------------------------------------------------------------------ networks


def gradcheck(net, params, x, y, *, key=None, dtype=None, sweep_entries: int = 64,
              max_entries: int | None = None, manual_grad=None) -> GradcheckReport:
    """Checks ``net.grad`` against reverse mode, forward mode and finite differences.

    Args:
      net: a network (``funcnn.mlp`` or ``funcnn.network``).
      params: its parameters.
      x: inputs ``[n, input_size]``.
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
      within its tolerance. Each row names its layer (``piece``).

    Raises:
      ValueError: ``dtype`` not float32/float64; the network's own input errors.

    >>> import jax, funcnn
    >>> jax.config.update("jax_enable_x64", True)
    >>> net = funcnn.mlp([3, 4, 2], hidden="tanh")
    >>> params = net.init(jax.random.key(0), dtype=jax.numpy.float64)
    >>> x = jax.random.normal(jax.random.key(1), (5, 3), jax.numpy.float64)
    >>> report = funcnn.gradcheck(net, params, x, jax.numpy.array([0, 1, 1, 0, 1]))
    >>> report.passed, report.worst("reverse").max_rel < 1e-12
    (True, True)
    """
    dtype = _dtype_name(dtype, str(jax.tree.leaves(params)[0].dtype))
    manual_grad = net.grad if manual_grad is None else manual_grad
    # float64 needs x64; enable it for the duration of the check only, so the
    # caller's global setting is left alone.
    with jax.enable_x64(True):
        p, xx, yy = _cast(params, dtype), _cast(x, dtype), _cast(y, dtype)
        # Value checks the jitted calls below would skip: the inputs must be valid.
        _checks.finite("x", xx)
        if not jnp.issubdtype(yy.dtype, jnp.floating):
            _checks.labels_in_range("y", yy, net.output_size)
        x64, y64 = _cast(x, jnp.float64), _cast(y, jnp.float64)
        # Jitted, not eager: eager mode compiles every primitive at a new shape,
        # which costs more than the check itself.
        manual = _jit_positional(manual_grad)(p, xx, yy, key)
        names = [layer.name for layer in net.layers]
        loss = _positional(net.loss)
        prob = _Problem(loss, loss, p, _cast(params, jnp.float64), manual, net.smooth, jax.tree_util.keystr,
                        lambda path: names[_index(path)] if _index(path) < len(names) else "",
                        _index, (xx, yy, key), (x64, y64, key))
        res = _run(prob, dtype, max_entries, sweep_entries)
    P, checked = res[3], res[2]
    title = (f"gradcheck: {describe(net)}{', random layers keyed' if net.random and key is not None else ''}, "
             f"dtype {dtype}, batch {xx.shape[0]}, {P} parameters"
             + (f" ({checked} checked by forward mode and finite differences)" if checked < P else ""))
    return _report(title, dtype, [res])


@functools.lru_cache(maxsize=64)
def _positional(fn):
    """``fn(params, x, y, key=key)`` as ``(params, x, y, key)``: one function object per ``fn``.

    Module-level and cached, not a lambda per call: the compiled programs are
    keyed on the function, so a check serves the next check of the same network.
    """
    def positional(params, x, y, key):
        return fn(params, x, y, key=key)

    return positional


@functools.lru_cache(maxsize=64)
def _jit_positional(fn):
    return jax.jit(_positional(fn))


def _index(path) -> int:
    return int(getattr(path[0], "idx", 0)) if path else 0


# ------------------------------------------------------------------ users' pieces


def _cotangents(shape_tree, count: int, seed: int, dtype):
    """``count`` random cotangents (standard normal, fixed seed) shaped like ``shape_tree``'s float leaves."""
    rng = np.random.default_rng(seed)
    return [jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), dtype), shape_tree)
            for _ in range(count)]


def _pair(ct, out):
    """<ct, out> summed over every float leaf."""
    return sum(jnp.sum(c * o) for c, o in zip(jax.tree.leaves(ct), jax.tree.leaves(out)))


def _positive(name, value) -> int:
    return _checks.positive_int(name, value)


def check_layer(layer: Layer, params, x, *, key=None, dtype=None, cotangents: int = 3, seed: int = 0,
                max_entries: int | None = None, sweep_entries: int = 0) -> GradcheckReport:
    """Checks a layer's hand-derived ``backward`` for its params and its input.

    For each of ``cotangents`` random cotangents ``dy`` (shaped like the
    output), the scalar ``<dy, forward(params, x)>`` has gradient
    ``backward(params, cache, dy)``; that is compared with reverse mode
    (``jax.vjp`` of ``forward``, which never runs ``backward``), forward mode
    and float64 finite differences, per leaf of params and for x.

    Args:
      layer: a ``Layer`` (built in or your own).
      params: its params, e.g. ``layer.init(key, d, dtype)[1]``.
      x: an input ``[n, in_width]``.
      key: for random layers (dropout): every reference uses the same draw.
      dtype: ``"float32"`` or ``"float64"`` (default: x's dtype).
      cotangents: how many random cotangents (>= 1).
      seed: their seed.
      max_entries, sweep_entries: as for ``gradcheck``.

    Returns:
      A ``GradcheckReport``; rows ``ct{k} params['W']``, ``ct{k} x`` name the layer.

    Raises:
      TypeError: ``layer`` is not a ``Layer``, or its backward returns
        gradients whose structure or shapes differ from params and x.
    """
    if not isinstance(layer, Layer):
        raise InvalidType(f"layer must be a funcnn.layers.Layer; got {type(layer).__name__}.")
    dtype = _dtype_name(dtype, str(jnp.asarray(x).dtype))
    cotangents = _positive("cotangents", cotangents)
    with jax.enable_x64(True):
        theta, theta64 = _cast((params, x), dtype), _cast((params, x), jnp.float64)
        y, cache = layer.forward(*theta, key=key)
        results = []
        for k, dy in enumerate(_cotangents(y, cotangents, seed, dtype)):
            manual = layer.backward(theta[0], cache, dy)
            _check_structure(f"layer {layer.name}: backward", manual, theta, ("dparams", "dx"))
            dy64 = _cast(dy, jnp.float64)
            prob = _Problem(lambda t, dy=dy: _pair(dy, layer.forward(*t, key=key)[0]),
                            lambda t, dy64=dy64: _pair(dy64, layer.forward(*t, key=key)[0]),
                            theta, theta64, tuple(manual), layer.smooth,
                            lambda path, k=k: f"ct{k} " + _arg_path(path, ("params", "x")),
                            lambda path: layer.name, lambda path: 0)
            results.append(_run(prob, dtype, max_entries, sweep_entries if k == 0 else 0))
    title = (f"check_layer: {layer.name}, dtype {dtype}, batch {np.shape(x)[0]}, "
             f"{results[0][3]} entries (params and x), {cotangents} random cotangent(s)")
    return _report(title, dtype, results)


def _arg_path(path, names) -> str:
    head = names[path[0].idx] if path and hasattr(path[0], "idx") and path[0].idx < len(names) \
        else jax.tree_util.keystr(path[:1])
    return head + jax.tree_util.keystr(path[1:])


def _check_structure(what, got, want, names):
    if jax.tree.structure(got) != jax.tree.structure(want) or \
            [np.shape(a) for a in jax.tree.leaves(got)] != [np.shape(a) for a in jax.tree.leaves(want)]:
        shapes = lambda t: jax.tree.map(lambda a: tuple(np.shape(a)), t)
        raise InvalidType(f"{what} must return {tuple(names)} shaped like the inputs "
                        f"{shapes(want)}; got {shapes(got)}.")


def check_activation(act, *, dtype="float64", points=None, batch: int = 3) -> GradcheckReport:
    """Checks an activation's hand-derived derivative over a grid of points.

    For an ``Activation``: ``grad(z, fn(z))`` at every point of ``points``
    (default ``ACTIVATION_GRID``: both signs, 1e-6 to 30, and 0), weighted
    by a random cotangent, against reverse mode, forward mode and finite
    differences of ``fn``. For an ``OutputActivation``: ``vjp(z, fn(z), dy)``
    on ``batch`` rows, each the grid (rolled) divided by 10: logits in
    [-3, 3], where a softmax is not saturated (a saturated softmax has a
    Jacobian of ~0, which would make any rule pass).

    Points where the function has a kink (the one-sided or the h and 2h
    difference quotients disagree) are excluded from every reference and
    counted: the derivative there is a convention (``funcnn.activations``),
    and so is autodiff's.

    Args:
      act: an ``Activation`` or ``OutputActivation`` value, or a built-in
        name (a hidden activation's where both kinds have it).
      dtype: ``"float64"`` (default) or ``"float32"``.
      points: the grid, a 1-D sequence of floats.
      batch: rows for an output activation.

    Returns:
      A ``GradcheckReport`` with rows ``z`` naming the activation.
    """
    if isinstance(act, str):
        act = activations.hidden(act) if act in activations.HIDDEN else activations.output(act)
    if not isinstance(act, (Activation, OutputActivation)):
        raise InvalidType(f"act must be an Activation or OutputActivation; got {type(act).__name__}.")
    dtype = _dtype_name(dtype, "float64")
    grid = np.asarray(ACTIVATION_GRID if points is None else points, np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise InvalidArgument(f"points must be a non-empty 1-D sequence of numbers; got shape {grid.shape}.")
    output = isinstance(act, OutputActivation)
    z = np.stack([np.roll(grid, i) / 10 for i in range(_positive("batch", batch))]) if output else grid
    with jax.enable_x64(True):
        theta, theta64 = jnp.asarray(z, dtype), jnp.asarray(z, jnp.float64)
        c = _cotangents(theta, 1, 0, dtype)[0]
        c64 = _cast(c, jnp.float64)
        manual = act.vjp(theta, act.fn(theta), c) if isinstance(act, OutputActivation) \
            else c * act.grad(theta, act.fn(theta))
        _check_structure(f"activation {act.name}: {'vjp' if output else 'grad'}", manual, theta, ("dz",))
        prob = _Problem(lambda t: jnp.sum(c * act.fn(t)), lambda t: jnp.sum(c64 * act.fn(t)), theta, theta64,
                        manual, act.smooth, lambda path: "z", lambda path: act.name, lambda path: 0)
        res = _run(prob, dtype, None, 0, kinks_everywhere=True)
    title = (f"check_activation: {act.name}, dtype {dtype}, {z.size} points in [{grid.min():g}, {grid.max():g}]"
             + (f" ({z.shape[0]} rows of {z.shape[1]})" if output else ""))
    return _report(title, dtype, [res])


def check_loss(loss, output, z, t, *, dtype=None) -> GradcheckReport:
    """Checks a loss's hand-derived gradient with respect to the logits (and float targets).

    The gradient funcnn uses, ``dlogits(z, out(z), t)`` (the loss's own
    ``grad`` if ``wrt="logits"``, else pushed through the output's VJP), and
    ``dtargets`` for float targets when the loss has one, against reverse mode,
    forward mode and finite differences of ``value(z, out(z), t)``.

    Args:
      loss: a ``funcnn.losses.Loss`` value or a built-in name.
      output: the output activation it follows (value or name).
      z: logits ``[n, m]``.
      t: targets: integer labels ``[n]`` (losses that take labels) or rows ``[n, m]``.
      dtype: ``"float32"`` or ``"float64"`` (default: z's dtype).

    Returns:
      A ``GradcheckReport`` with rows ``z`` (and ``t``) naming the loss.
    """
    out = activations.output(output)
    fns = losses.get(loss, out)
    dtype = _dtype_name(dtype, str(jnp.asarray(z).dtype))
    with jax.enable_x64(True):
        zz, tt = _cast(z, dtype), _cast(t, dtype)
        float_t = jnp.issubdtype(tt.dtype, jnp.floating) and fns.dtargets is not None
        theta = (zz, tt) if float_t else (zz,)
        theta64 = _cast(theta, jnp.float64)
        t64 = _cast(t, jnp.float64)

        def value(th, t_fixed):
            zt, tv = (th[0], th[1]) if float_t else (th[0], t_fixed)
            return fns.value(zt, out.fn(zt), tv)

        yv = out.fn(zz)
        manual = (fns.dlogits(zz, yv, tt), fns.dtargets(zz, yv, tt)) if float_t and fns.dtargets is not None \
            else (fns.dlogits(zz, yv, tt),)
        _check_structure(f"loss {fns.name}: gradients", manual, theta, ("dz", "dt"))
        smooth = fns.loss is not None and fns.loss.smooth and out.smooth
        prob = _Problem(lambda th: value(th, tt), lambda th: value(th, t64), theta, theta64, manual, smooth,
                        lambda path: _arg_path(path, ("z", "t")), lambda path: f"{fns.name} after {out.name}",
                        lambda path: 0)
        res = _run(prob, dtype, None, 0)
    title = f"check_loss: {fns.name} after {out.name}, dtype {dtype}, batch {np.shape(z)[0]}"
    return _report(title, dtype, [res])


def check_vjp(f, *args, cotangents: int = 3, seed: int = 0, dtype=None, smooth: bool = False,
              max_entries: int | None = None) -> GradcheckReport:
    """Checks the rule of any ``jax.custom_vjp`` function against its own undecorated primal.

    For each of ``cotangents`` random cotangents ``c`` (shaped like ``f``'s
    output), the custom rule's pullback ``jax.vjp(f, *args)[1](c)`` is
    compared, per floating input leaf, with reverse-mode autodiff of the
    primal ``f.fun`` (the function as written, without the rule), forward
    mode of ``f.fun`` and float64 central finite differences of ``<c, f.fun>``.
    Integer inputs are held fixed.

    What this does that ``jax.test_util.check_grads`` does not: it checks
    the rule against the primal rather than JAX against itself, every input
    entry rather than one random direction, several cotangents, and it says
    which input leaf is wrong by how much. ``torch.autograd.gradcheck``
    compares against finite differences only, with one tolerance for all.

    Args:
      f: a function decorated with ``jax.custom_vjp``.
      *args: the point, a pytree per argument.
      cotangents: how many random cotangents (>= 1); seed: their seed.
      dtype: ``"float32"`` or ``"float64"`` (default: the first float input's).
      smooth: True if ``f.fun`` has no kinks (skips kink detection).
      max_entries: as for ``gradcheck``.

    Returns:
      A ``GradcheckReport`` with rows ``ct{k} args[i]...`` naming ``f``.

    Raises:
      TypeError: ``f`` is not a ``jax.custom_vjp`` function.

    >>> import jax, jax.numpy as jnp
    >>> jax.config.update("jax_enable_x64", True)
    >>> @jax.custom_vjp
    ... def cube(x):
    ...     return x ** 3
    >>> cube.defvjp(lambda x: (x ** 3, x), lambda x, g: (3 * x * x * g,))
    >>> check_vjp(cube, jnp.linspace(-2.0, 2.0, 5), smooth=True).passed
    True
    >>> cube.defvjp(lambda x: (x ** 3, x), lambda x, g: (3 * x * g,))  # wrong: d/dx x^3 is 3x^2
    >>> check_vjp(cube, jnp.linspace(-2.0, 2.0, 5), smooth=True).failed_pieces
    ('cube',)
    """
    if not isinstance(f, jax.custom_vjp) or not callable(getattr(f, "fun", None)):
        raise InvalidType(f"f must be a function decorated with jax.custom_vjp (it has .fun, the primal); "
                        f"got {type(f).__name__}.")
    name = getattr(f.fun, "__name__", "f")
    floats = [jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) for a in jax.tree.leaves(args)]
    if not any(floats):
        raise InvalidArgument(f"check_vjp({name}): no floating input to differentiate.")
    first = next(a for a, fl in zip(jax.tree.leaves(args), floats) if fl)
    dtype = _dtype_name(dtype, str(jnp.asarray(first).dtype))
    cotangents = _positive("cotangents", cotangents)
    with jax.enable_x64(True):
        full, full64 = _cast(args, dtype), _cast(args, jnp.float64)
        treedef = jax.tree.structure(full)
        flat, flat64 = jax.tree.leaves(full), jax.tree.leaves(full64)
        fixed = [not fl for fl in floats]

        def merged(vary, base):  # the full args from the varying float leaves
            it = iter(vary)
            return jax.tree.unflatten(treedef, [b if fx else next(it) for b, fx in zip(base, fixed)])

        vary = [a for a, fx in zip(flat, fixed) if not fx]
        vary64 = [a for a, fx in zip(flat64, fixed) if not fx]
        positions = [i for i, fx in enumerate(fixed) if not fx]
        leaf_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(full)[0]]
        y, pullback = jax.vjp(f, *full)
        results = []
        for k, c in enumerate(_cotangents(y, cotangents, seed, dtype)):
            rule = jax.tree.leaves(pullback(c), is_leaf=lambda a: a is None)
            manual = [rule[i] for i in positions]
            c64 = _cast(c, jnp.float64)
            prob = _Problem(lambda v, c=c: _pair(c, f.fun(*merged(v, flat))),
                            lambda v, c64=c64: _pair(c64, f.fun(*merged(v, flat64))),
                            vary, vary64, manual, smooth,
                            lambda path, k=k: f"ct{k} args{leaf_paths[positions[path[0].idx]]}",
                            lambda path: name, lambda path: 0)
            results.append(_run(prob, dtype, max_entries, 0))
    title = (f"check_vjp: {name}, dtype {dtype}, {results[0][3]} input entries, "
             f"{cotangents} random cotangent(s), custom rule vs the undecorated primal")
    return _report(title, dtype, results)


# ------------------------------------------------------------------ forward mode and curvature


def _leaf_rows(prefix, names, manual, refs, dtype, piece_of, layer_of):
    """Comparison rows, one per (leaf of ``manual``, reference): ``refs`` maps a reference name to a tree."""
    rows = []
    flat = jax.tree_util.tree_flatten_with_path(manual)[0]
    for ref_name, ref in refs.items():
        for (path, a), b in zip(flat, jax.tree.leaves(ref)):
            name = prefix + _arg_path(path, names) if names else prefix + jax.tree_util.keystr(path)
            rows.append(_compare(name, layer_of(path), ref_name, a, b, TOLERANCES[(ref_name, dtype)],
                                 piece=piece_of(path)))
    return rows


def _one_leaf_tangents(tree, count: int, seed: int, dtype):
    """``(k, path, tangent)``: for each of ``count`` draws, one tangent per leaf, random there and 0 elsewhere."""
    out = []
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    for k, draw in enumerate(_cotangents(tree, count, seed, dtype)):
        leaves = jax.tree.leaves(draw)
        for i, (path, _) in enumerate(flat):
            out.append((k, path, jax.tree.unflatten(treedef, [leaf if j == i else jnp.zeros_like(leaf)
                                                              for j, leaf in enumerate(leaves)])))
    return out


def check_jvp(layer: Layer, params, x, *, dtype=None, tangents: int = 2, seed: int = 0) -> GradcheckReport:
    """Checks a layer's hand-derived forward-mode rule ``layer.jvp`` tangent leaf by tangent leaf.

    For each of ``tangents`` random draws and each leaf of ``(params, x)``, a
    tangent that is random in that leaf and zero elsewhere is pushed through
    ``layer.jvp``; its output tangent is compared with ``jax.jvp`` of
    ``layer.forward`` (reference ``forward``: JAX's forward mode of the plain
    forward, which never runs the rule) and with float64 central finite
    differences of the forward along the tangent (``finite_diff``), so a
    wrong term is reported under the leaf it multiplies. The forward runs
    without a key (forward mode is deterministic).

    Args:
      layer: a ``Layer`` with a ``jvp``.
      params: its params.
      x: an input ``[n, in_width]``.
      dtype: ``"float32"`` or ``"float64"`` (default: x's dtype).
      tangents: random draws (>= 1).
      seed: their seed.

    Returns:
      A ``GradcheckReport``; rows ``t{k} params['W']``, ``t{k} x``.

    Raises:
      TypeError: ``layer`` is not a ``Layer`` or has no ``jvp``.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"layer must be a funcnn.layers.Layer; got {type(layer).__name__}.")
    if layer.jvp is None:
        raise TypeError(f"layer {layer.name!r} has no jvp rule to check.")
    dtype = _dtype_name(dtype, str(jnp.asarray(x).dtype))
    tangents = _positive("tangents", tangents)
    with jax.enable_x64(True):
        theta, theta64 = _cast((params, x), dtype), _cast((params, x), jnp.float64)

        def f(t):
            return layer.forward(*t)[0]
        rows = []
        for k, path, t in _one_leaf_tangents(theta, tangents, seed, dtype):
            ours = layer.jvp(*theta, *t)[1]
            t64 = _cast(t, jnp.float64)
            h = FD_STEP * max(1.0, float(max(jnp.max(jnp.abs(a)) for a in jax.tree.leaves(theta64))))
            plus = f(jax.tree.map(lambda a, d, h=h: a + h * d, theta64, t64))
            minus = f(jax.tree.map(lambda a, d, h=h: a - h * d, theta64, t64))
            refs = {"forward": jax.jvp(f, (theta,), (t,))[1], "finite_diff": (plus - minus) / (2 * h)}
            name = f"t{k} " + _arg_path(path, ("params", "x"))
            rows += _leaf_rows(name + " -> y", (), ours, refs, dtype, lambda p: layer.name, lambda p: 0)
    title = f"check_jvp: {layer.name}, dtype {dtype}, batch {np.shape(x)[0]}, {tangents} random draw(s) per leaf"
    return GradcheckReport(title, dtype, tuple(rows), None, FD_STEP)


def check_hvp(net, params, x, y, *, dtype=None, vectors: int = 2, seed: int = 0) -> GradcheckReport:
    """Checks ``net.hvp`` (hand-derived R{backprop}) leaf by leaf of ``H v``.

    For each of ``vectors`` random ``v`` (like params), ``net.hvp(params, x,
    y, v)`` is compared per leaf with ``jax.jvp(jax.grad(net.loss))`` (reference
    ``reverse``: automatic forward-over-reverse of the forward-only loss, which
    never runs the hand-derived backward) and with float64 central finite
    differences of the hand-derived gradient along ``v``,
    ``(grad(p + h v) - grad(p - h v)) / 2h`` (``finite_diff``). A wrong
    second derivative (an activation's ``grad2``, an output's ``rvjp``, a
    loss's ``hess``) or a wrong term of a layer's ``rforward``/``rbackward``
    passes every first-order check and fails here, in the rows of the leaves
    it touches (a wrong ``rdx`` shows in the layers below the faulty one).

    Args:
      net: a ``Network``.
      params, x, y: as for ``net.loss``.
      dtype: ``"float32"`` or ``"float64"`` (default: the params' dtype).
      vectors: random directions (>= 1).
      seed: their seed.

    Returns:
      A ``GradcheckReport``; rows ``v{k} [l]['W']`` name each layer.
    """
    dtype = _dtype_name(dtype, str(jax.tree.leaves(params)[0].dtype))
    vectors = _positive("vectors", vectors)
    with jax.enable_x64(True):
        p, xc = _cast(params, dtype), _cast(x, dtype)
        yc = y if jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer) else _cast(y, dtype)
        p64, x64 = _cast(params, jnp.float64), _cast(x, jnp.float64)
        y64 = y if jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer) else _cast(y, jnp.float64)
        hvp = jax.jit(net.hvp)
        ref = jax.jit(lambda p, v: jax.jvp(jax.grad(lambda q: net.loss(q, xc, yc)), (p,), (v,))[1])
        g64 = jax.jit(lambda q: net.grad(q, x64, y64))
        h = FD_STEP * max(1.0, float(max(jnp.max(jnp.abs(a)) for a in jax.tree.leaves(p64))))
        rows = []
        for k, v in enumerate(_cotangents(p, vectors, seed, dtype)):
            v64 = _cast(v, jnp.float64)
            fd = jax.tree.map(lambda a, b: (a - b) / (2 * h), g64(jax.tree.map(lambda a, d: a + h * d, p64, v64)),
                              g64(jax.tree.map(lambda a, d: a - h * d, p64, v64)))
            rows += _leaf_rows(f"v{k} ", (), hvp(p, xc, yc, v), {"reverse": ref(p, v), "finite_diff": fd}, dtype,
                               lambda path: net.layers[_index(path)].name, _index)
    title = (f"check_hvp: {describe(net)}, dtype {dtype}, batch {np.shape(x)[0]}, "
             f"{vectors} random vector(s)")
    return GradcheckReport(title, dtype, tuple(rows), None, FD_STEP)


class _CallableModule(types.ModuleType):
    """Lets ``funcnn.gradcheck`` be both this module and its main function."""

    def __call__(self, *args, **kwargs) -> GradcheckReport:
        return gradcheck(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
