"""Strict numerics for every test, as in equinox's conftest.

* float64 is enabled so gradient references can be taken in double precision;
  every test that wants float32 says so explicitly.
* Rank promotion raises: a silent ``[batch] + [batch, 1] -> [batch, batch]``
  broadcast is a bug, never a convenience.
"""
import os

import jax

# The CLI's persistent compilation cache stays off in tests (in-process calls of
# cli.main and the subprocesses they start inherit this): a test never writes to
# the user's real cache. Tests of the cache unset it with a temporary XDG_CACHE_HOME.
os.environ["FUNCNN_NO_COMPILE_CACHE"] = "1"

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
