"""Strict numerics for every test, as in equinox's conftest, and one compilation cache for the suite.

* float64 is enabled so gradient references can be taken in double precision;
  every test that wants float32 says so explicitly.
* Rank promotion raises: a silent ``[batch] + [batch, 1] -> [batch, batch]``
  broadcast is a bug, never a convenience.
* Compiled programs are kept in ``.jax_test_cache/`` (see below).
"""
import os

# The CLI's persistent compilation cache stays off in tests (in-process calls of
# cli.main and the subprocesses they start inherit this): a test never writes to
# the user's real cache. Tests of the cache unset it with a temporary XDG_CACHE_HOME.
os.environ["FUNCNN_NO_COMPILE_CACHE"] = "1"

# The suite's own persistent compilation cache, in the checkout (.jax_test_cache/,
# git-ignored), shared by the xdist workers and every subprocess a test starts (JAX
# reads these variables at import). Many tests build equal networks as new Python
# objects, which JAX's in-memory cache cannot match: their programs are the same HLO,
# so the second compile of each is a disk read instead (tests/test_suite_cache.py).
# It changes no result: a cached program is the one XLA compiled for that HLO.
# A second run of the suite loads most programs (3.5x faster on the gradient files).
# Set FUNCNN_TEST_JAX_CACHE=off to compile everything afresh, or to a directory;
# `rm -r .jax_test_cache` empties it (it is not bounded: JAX bounds it only with filelock).
_cache = os.environ.get("FUNCNN_TEST_JAX_CACHE") or os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".jax_test_cache")
_CACHE_ENV = {"JAX_COMPILATION_CACHE_DIR": _cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}  # every program is kept, however small
if _cache == "off":  # nor for the subprocesses, whatever a parent process set
    for _name in _CACHE_ENV:
        os.environ.pop(_name, None)
else:
    os.makedirs(_cache, mode=0o700, exist_ok=True)
    os.environ.update(_CACHE_ENV)

import jax  # noqa: E402  (after the variables above: JAX reads them at import)

jax.config.update("jax_compilation_cache_dir", None if _cache == "off" else _cache)  # even if imported earlier
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_terminal_summary(terminalreporter):
    """Prints the largest hand-derived vs jax.grad errors the gradient matrix saw."""
    from reference import OBSERVED

    if OBSERVED:
        terminalreporter.write_sep("-", "largest normwise relative gradient errors observed")
        for (kind, dtype), err in sorted(OBSERVED.items()):
            terminalreporter.write_line(f"{kind:<28} {dtype:<8} {err:.2e}")


import pytest  # noqa: E402


@pytest.fixture(params=["jit", "eager"])
def variant(request):
    """Runs a test body with its function jitted and not: the pytest form of
    ``chex.variants(with_jit=True, without_jit=True)`` (which needs absl test classes)."""
    return jax.jit if request.param == "jit" else (lambda f: f)
