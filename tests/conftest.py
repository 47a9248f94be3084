"""Strict numerics for every test, as in equinox's conftest.

* float64 is enabled so gradient references can be taken in double precision;
  every test that wants float32 says so explicitly.
* Rank promotion raises: a silent ``[batch] + [batch, 1] -> [batch, batch]``
  broadcast is a bug, never a convenience.
"""
import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
