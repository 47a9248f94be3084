"""Measure the test suite's power: inject realistic backward, checker and hyperparameter mistakes, one at a time.

Each mutant is a one-line textual change to funcnn's own code (a derivative
with a factor missing, a forgotten cotangent, a dropped term of layer norm's
backward, a bf16 output, a checker that compares the gradient with itself,
...). For each, a copy of the package and the tests is made in a temporary
directory, the mutation applied there (never to the working tree), and the
gradient-related tests run with ``pytest -x``; a mutant is *killed* when the
suite fails. The kill rate is printed with every survivor named.

    python scripts/mutate.py                 # every mutant (25 min on 2 cores with the suite cache warm)
    python scripts/mutate.py --only 3 7      # some of them, by number
    python scripts/mutate.py --match hvp:    # those whose description contains a text
    python scripts/mutate.py --list          # what they are

Exit code 0 when every mutant is killed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
# Fast, relevant files first: pytest -x stops at the first failure.
TESTS = ["tests/test_layers.py", "tests/test_activations.py", "tests/test_losses.py", "tests/test_network.py",
         "tests/test_gradcheck.py", "tests/test_custom_pieces.py", "tests/test_mlp.py", "tests/test_examples.py",
         "tests/test_mlp_gradients.py", "tests/test_bit_identity.py", "tests/test_curvature.py",
         "tests/test_initializers.py"]


class Mutant(NamedTuple):
    file: str
    old: str  # must occur exactly once in the file
    new: str
    what: str
    # A test file run before the others: the second-order mutants go to
    # test_curvature.py first, since the first-order files cannot see them and
    # -x stops at the first failure. The whole list still runs if it passes.
    first: str | None = None


CURV = "tests/test_curvature.py"
TRAIN = "tests/test_train.py"


MUTANTS = [
    Mutant("funcnn/layers.py", "dz = dy if act is None else dy * act.grad(cache.z, cache.y)\n        dW",
           "dz = dy\n        dW", "dense: forgets the activation's derivative"),
    Mutant("funcnn/layers.py", 'return {"W": dW, "b": jnp.sum(dz, axis=0)}, mm(dz, params["W"].T)',
           'return {"W": dW, "b": jnp.mean(dz, axis=0)}, mm(dz, params["W"].T)', "dense: db averaged, not summed"),
    Mutant("funcnn/layers.py", "dW = mm(transposed(cache.x), dz)  # [in, width]",
           "dW = mm(transposed(cache.x), dy)  # [in, width]", "dense: dW from dy instead of dz"),
    Mutant("funcnn/layers.py", 'mm(dz, params["W"].T)', 'mm(dy, params["W"].T)', "dense: dx from dy instead of dz"),
    Mutant("funcnn/layers.py", "return dy if mask is None else dy * mask", "return dy",
           "dropout: backward forgets the mask"),
    Mutant("funcnn/layers.py", "return dy if mask is None else dy * mask",
           "return dy if mask is None else dy * (mask > 0)", "dropout: backward forgets the 1/keep scaling"),
    Mutant("funcnn/layers.py", "                    - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))",
           "                    - 0 * xhat)", "layer_norm: drops the variance term of dx"),
    Mutant("funcnn/layers.py", "dx = inv * (g - jnp.mean(g, axis=-1, keepdims=True)",
           "dx = inv * (g", "layer_norm: drops the mean term of dx"),
    Mutant("funcnn/layers.py", 'return {"gain": jnp.sum(dy * xhat, axis=0), "bias": jnp.sum(dy, axis=0)}, dx',
           'return {"gain": jnp.sum(dy, axis=0), "bias": jnp.sum(dy, axis=0)}, dx', "layer_norm: dgain without xhat"),
    Mutant("funcnn/layers.py", 'g = dy * params["gain"][None, :]', "g = dy", "layer_norm: forgets the gain in dx"),
    Mutant("funcnn/layers.py", "return grads, dy + dx  # the skip path", "return grads, dx  # the skip path",
           "residual: forgets the skip path's gradient"),
    Mutant("funcnn/activations.py", 'Activation("sigmoid", jax.nn.sigmoid, lambda z, y: y * (1 - y),',
           'Activation("sigmoid", jax.nn.sigmoid, lambda z, y: (1 - y),', "sigmoid' missing a factor"),
    Mutant("funcnn/activations.py", 'Activation("tanh", jnp.tanh, lambda z, y: 1 - y * y,',
           'Activation("tanh", jnp.tanh, lambda z, y: 1 - y,', "tanh' = 1 - y"),
    Mutant("funcnn/activations.py", 'Activation("relu", _relu, lambda z, y: (z > 0).astype(z.dtype),',
           'Activation("relu", _relu, lambda z, y: (z >= 0).astype(z.dtype),', "relu' convention at 0 flipped"),
    Mutant("funcnn/activations.py", "jnp.where(z > 0, 1.0, y + ELU_ALPHA)", "jnp.where(z > 0, 1.0, y)",
           "elu' forgets alpha"),
    Mutant("funcnn/activations.py", "return y * (dy - jnp.sum(dy * y, axis=-1, keepdims=True))",
           "return dy - jnp.sum(dy * y, axis=-1, keepdims=True)", "softmax VJP forgets the factor y"),
    Mutant("funcnn/activations.py", "lambda z, y, dy: dy * y * (1 - y), _threshold",
           "lambda z, y, dy: dy * y, _threshold", "sigmoid output VJP missing (1 - y)"),
    Mutant("funcnn/losses.py", 'Loss("mse", _mse_value, lambda z, y, t: (y - t) / _n(z),',
           'Loss("mse", _mse_value, lambda z, y, t: (y - t),', "mse gradient forgets 1/n"),
    Mutant("funcnn/losses.py", "return (y * jnp.sum(T, axis=-1, keepdims=True) - T) / _n(z)",
           "return (y - T) / _n(z)", "cross-entropy gradient assumes rows sum to 1"),
    Mutant("funcnn/losses.py", 'Loss("binary_cross_entropy", _bce_value, lambda z, y, t: (y - t) / _n(z),',
           'Loss("binary_cross_entropy", _bce_value, lambda z, y, t: (t - y) / _n(z),', "bce gradient sign"),
    Mutant("funcnn/losses.py", "dtargets=lambda z, y, t: (t - y) / _n(z), smooth=True,",
           "dtargets=lambda z, y, t: (y - t) / _n(z), smooth=True,", "mse target gradient sign"),
    Mutant("funcnn/losses.py", "lambda path, g, p: g + coef * p if _is_weight(path) else g",
           "lambda path, g, p: g + coef * p", "L2 gradient on biases and gains too"),
    Mutant("funcnn/losses.py", "l2 / (2 * n) * sum(", "l2 / n * sum(", "L2 penalty without the 1/2"),
    Mutant("funcnn/network.py", "grads = losses.add_l2_grad(grads, params, l2_scale * l2 / dz.shape[0])",
           "grads = losses.add_l2_grad(grads, params, l2 / dz.shape[0])", "custom_vjp: L2 term forgets g"),
    Mutant("funcnn/network.py", "dy = g * fns.dtargets(z, yout, y)", "dy = fns.dtargets(z, yout, y)",
           "custom_vjp: target cotangent forgets g"),
    Mutant("funcnn/network.py",
           "grads, dx = backward(params, cache, g * fns.dlogits(z, yout, y), need_dx=True, l2_scale=g)",
           "grads, dx = backward(params, cache, fns.dlogits(z, yout, y), need_dx=True, l2_scale=g)",
           "custom_vjp: data gradient and dx forget g"),
    Mutant("funcnn/layers.py", ", preferred_element_type=jnp.float32)", ")", "bf16: matmul outputs in bf16"),
    Mutant("funcnn/layers.py", "return out.astype(jnp.promote_types(a.dtype, b.dtype))",
           "return out.astype(jnp.bfloat16).astype(jnp.promote_types(a.dtype, b.dtype))",
           "bf16: products rounded to bf16 after float32 accumulation"),
    Mutant("funcnn/mlp.py", "b = s * unit[start + fi * fo:start + counts[l]] if same",
           "b = s * unit[start:start + fo] if same", "mlp init: biases reuse the weights' draws"),
    Mutant("funcnn/gradcheck.py", '("reverse", "float64"): 1e-10,', '("reverse", "float64"): 1e-4,',
           "checker: float32 tolerance in float64"),
    Mutant("funcnn/gradcheck.py", "fd[idx] = (plus - minus) / (2 * h)", "fd[idx] = (plus - minus) / h",
           "checker: central difference without the 2"),
    Mutant("funcnn/gradcheck.py", "    forward = jax.tree.unflatten(jax.tree.structure(prob.theta),",
           "    forward = reverse if True else jax.tree.unflatten(jax.tree.structure(prob.theta),",
           "checker: forward mode replaced by reverse mode"),
    Mutant("funcnn/gradcheck.py", "    reverse = jax.grad(value)(theta, *args)", "    reverse = theta",
           "checker: reverse mode replaced by the point itself"),
    Mutant("funcnn/gradcheck.py", "    scale = np.max(np.abs(b)) if b.size else 0.0",
           "    scale = np.max(np.abs(a)) if a.size else 0.0", "checker: relative to the manual gradient"),
    Mutant("funcnn/gradcheck.py", "bool(max_rel <= tol)", "bool(max_rel <= tol or cosine > 0.999)",
           "checker: a high cosine passes a scaled gradient"),
    # ---- the hand-derived second-order code (net.hvp's R{backprop}); "hvp:" selects them (--match hvp:)
    Mutant("funcnn/activations.py", "lambda z, y: -2 * y * (1 - y * y), smooth=True",
           "lambda z, y: 2 * y * (1 - y * y), smooth=True", "hvp: tanh'' sign flipped", CURV),
    Mutant("funcnn/activations.py", "lambda z, y: y * (1 - y) * (1 - 2 * y),",
           "lambda z, y: y * (1 - y) * (1 - y),", "hvp: sigmoid'' with (1 - y) for (1 - 2y)", CURV),
    Mutant("funcnn/activations.py", "return 2 * q + z * (2 * q * (1 - 2 * s) * du",
           "return q + z * (2 * q * (1 - 2 * s) * du", "hvp: gelu'' missing a factor 2", CURV),
    Mutant("funcnn/activations.py", "lambda z, y: jnp.where(z > 0, 0.0, y + ELU_ALPHA)",
           "lambda z, y: jnp.where(z > 0, 0.0, y)", "hvp: elu'' forgets alpha", CURV),
    Mutant("funcnn/activations.py", "return s * (1 - s) * (2 + z * (1 - 2 * s))",
           "return s * (1 - s) * (1 + z * (1 - 2 * s))", "hvp: swish'' with 1 for 2", CURV),
    Mutant("funcnn/layers.py", "rdz = rdz + dy * act.grad2(c.z, c.y) * c.rz", "rdz = rdz",
           "hvp: dense R-backward drops dy f''(z) rz", CURV),
    Mutant("funcnn/layers.py", "rdWt = rdWt + mm(dz.T, c.rx)", "rdWt = rdWt",
           "hvp: dense R-backward drops dz^T rx", CURV),
    Mutant("funcnn/layers.py", 'mm(rdz, W.T) + mm(dz, v["W"].T)', "mm(rdz, W.T)",
           "hvp: dense R-backward drops dz vW^T", CURV),
    Mutant("funcnn/layers.py", "return {}, dy * f1, rdy * f1 + dy * act.grad2(x, y) * rx",
           "return {}, dy * f1, rdy * f1", "hvp: activation layer R-backward drops dy f''(x) rx", CURV),
    Mutant("funcnn/layers.py", "rdx = c.inv * ru - c.a * c.inv * dx", "rdx = c.inv * ru",
           "hvp: layer norm R-backward drops the variance's tangent", CURV),
    Mutant("funcnn/layers.py", "- c.xhat * jnp.mean(rg * c.xhat + g * c.rxhat, axis=-1, keepdims=True))",
           "- c.xhat * jnp.mean(rg * c.xhat, axis=-1, keepdims=True))",
           "hvp: layer norm R-backward drops g rxhat", CURV),
    Mutant("funcnn/layers.py", 'jnp.sum(rdy * c.xhat + dy * c.rxhat, axis=0)', "jnp.sum(rdy * c.xhat, axis=0)",
           "hvp: layer norm R{dgain} drops dy rxhat", CURV),
    Mutant("funcnn/layers.py", "return rgrads, dy + dx, rdy + rdx", "return rgrads, dy + dx, rdx",
           "hvp: residual R-backward drops the skip path's tangent", CURV),
    Mutant("funcnn/losses.py", "return y * (d - jnp.sum(y * d, axis=-1, keepdims=True)) * jnp.sum(",
           "return y * d * jnp.sum(", "hvp: softmax cross-entropy R-rule drops -p p^T", CURV),
    Mutant("funcnn/activations.py", "+ y * (rdy - jnp.sum(rdy * y + dy * ry, axis=-1, keepdims=True)))",
           "+ y * (rdy - jnp.sum(rdy * y, axis=-1, keepdims=True)))", "hvp: softmax rvjp drops <dy, ry>", CURV),
    Mutant("funcnn/activations.py", "return rdy * s1 + dy * (1 - 2 * y) * s1 * rz", "return rdy * s1",
           "hvp: sigmoid rvjp drops the second-order term", CURV),
    Mutant("funcnn/network.py", "return losses.add_l2_grad(rgrads, v, l2 / x.shape[0]) if l2 else rgrads",
           "return rgrads", "hvp: L2's curvature dropped", CURV),
    # Hyperparameters as traced scalars (fit_many, make_padded_epoch, the scikit-learn estimators):
    # a wrong one trains another model than the one the config or the estimator says.
    Mutant("funcnn/layers.py", "        key, keep = key.key, key.keep\n",
           "        key, keep = key.key, jnp.asarray(1.0 - rate)\n",
           "hyper: a DropoutKey's keep ignored (the layer's own rate)", TRAIN),
    Mutant("funcnn/layers.py", "keys = iter([DropoutKey(k, key.keep) for k in jax.random.split(key.key, n_random)])",
           "keys = iter([key] * n_random)", "hyper: every dropout layer gets the same DropoutKey", TRAIN),
    Mutant("funcnn/train.py", "        loss, g = _with_l2(loss, g, state.params, l2, jnp.sum(w))",
           "        loss, g = _with_l2(loss, g, state.params, l2, x.shape[0])",
           "hyper: padded epoch's traced L2 over the padded batch, not its rows", TRAIN),
    Mutant("funcnn/train.py",
           "    return loss + _losses.l2_penalty(params, l2, n), _losses.add_l2_grad(g, params, l2 / n)",
           "    return loss, _losses.add_l2_grad(g, params, l2 / n)",
           "hyper: the traced L2's penalty left out of the loss", TRAIN),
    Mutant("funcnn/train.py", "    return jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)",
           "    return updates", "hyper: the traced learning rate ignored", TRAIN),
    Mutant("funcnn/train.py", "    return key if keep is None else _layers.DropoutKey(key, keep)",
           "    return key", "hyper: the traced dropout rates ignored", TRAIN),
]


def run(mutant: Mutant, timeout: float, cache: str) -> tuple[bool, float, str]:
    """(killed, seconds, the first failing test or the reason).

    ``cache``: the suite's compilation cache (tests/conftest.py), shared by every mutant: the
    programs a mutation leaves unchanged load from it, and a changed one is new HLO, compiled anew.
    """
    with tempfile.TemporaryDirectory(prefix="funcnn-mutant-") as tmp:
        tmp = Path(tmp)
        for name in ("funcnn", "tests", "README.md", "pyproject.toml", "configs", "scripts"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
        path = tmp / mutant.file
        text = path.read_text()
        if text.count(mutant.old) != 1:
            raise SystemExit(f"mutant {mutant.what!r}: {mutant.old!r} occurs {text.count(mutant.old)} times in "
                             f"{mutant.file}; fix the mutant list.")
        path.write_text(text.replace(mutant.old, mutant.new))
        # The copy has no git history: test_bit_identity takes funcnn 0.1 from this checkout's
        # (without it that test skips, and a mutant only it can see survives unseen).
        env = dict(os.environ, PYTHONPATH=str(tmp), PYTHONDONTWRITEBYTECODE="1", FUNCNN_HISTORY=str(ROOT),
                   FUNCNN_TEST_JAX_CACHE=cache)
        t0 = time.perf_counter()
        tests = TESTS if mutant.first is None else [mutant.first] + [t for t in TESTS if t != mutant.first]
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                  cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, time.perf_counter() - t0, "timed out (counted as survived)"
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        if proc.returncode not in (0, 1):  # collection error, interrupted: the mutant was not tested
            raise SystemExit(f"mutant {mutant.what!r}: pytest exited {proc.returncode}, not a test verdict:\n"
                             + proc.stdout[-3000:])
        # pytest exits 1 exactly when some test failed
        return proc.returncode == 1, time.perf_counter() - t0, (failed[0] if failed else "all tests passed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=int, nargs="*", help="mutant numbers to run (default: all)")
    ap.add_argument("--match", default=None, help="only the mutants whose description contains this (e.g. hvp:)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per mutant")
    args = ap.parse_args(argv)
    chosen = list(enumerate(MUTANTS)) if not args.only else [(i, MUTANTS[i]) for i in args.only]
    if args.match is not None:
        chosen = [(i, m) for i, m in chosen if args.match in m.what]
    if args.list:
        for i, m in chosen:
            print(f"{i:>3}  {m.file:<22} {m.what}")
        return 0
    killed = 0
    with tempfile.TemporaryDirectory(prefix="funcnn-mutants-jax-cache-") as own:
        cache = os.environ.get("FUNCNN_TEST_JAX_CACHE") or own
        for i, m in chosen:
            dead, seconds, why = run(m, args.timeout, cache)
            killed += dead
            print(f"{i:>3} {'killed  ' if dead else 'SURVIVED'} {seconds:6.0f} s  {m.what}  [{why}]", flush=True)
    print(f"killed {killed} of {len(chosen)} mutants ({100 * killed / len(chosen):.0f}%)")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
