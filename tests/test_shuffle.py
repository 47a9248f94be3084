"""funcnn.shuffle.permutation: a bijection for every n, deterministic, and spread like a uniform order."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import shuffle


def draws(n, count, seed=0):
    """``[count, n]``: one permutation per key of a fixed key family (deterministic)."""
    keys = jax.random.split(jax.random.key(seed), count)
    return np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, n)))(keys))


def chi2_critical(dof, z=4.75):
    """Wilson-Hilferty upper quantile of chi-squared; z = 4.75 is about p = 1e-6."""
    c = 2.0 / (9.0 * dof)
    return dof * (1.0 - c + z * math.sqrt(c)) ** 3


def order_chi2(n, count):
    """Chi-squared statistic of the counts of all n! orders over ``count`` keys."""
    index = {p: i for i, p in enumerate(itertools.permutations(range(n)))}
    counts = np.zeros(len(index))
    for row in draws(n, count):
        counts[index[tuple(row)]] += 1
    expected = count / len(index)
    return float(((counts - expected) ** 2 / expected).sum()), len(index) - 1


# Every small n, and both sides of each power of two (where the Feistel domain doubles).
SIZES = list(range(0, 13)) + [2**k + d for k in (6, 8, 12, 16) for d in (-1, 0, 1)]


def test_is_a_permutation():
    for n in SIZES:
        p = np.asarray(shuffle.permutation(jax.random.key(n), n))
        assert p.dtype == np.int32 and p.shape == (n,), n
        np.testing.assert_array_equal(np.sort(p), np.arange(n), err_msg=f"n={n}")


def test_same_key_same_order_and_keys_differ():
    a, b = (np.asarray(shuffle.permutation(jax.random.key(7), 1000)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    rows = draws(1000, 50)
    assert len({r.tobytes() for r in rows}) == 50
    # A uniform order has 1 fixed point on average (Poisson); 10 or more is rare.
    assert max(int(np.sum(r == np.arange(1000))) for r in rows) < 10


def test_jit_matches_eager():
    key = jax.random.key(3)
    np.testing.assert_array_equal(jax.jit(shuffle.permutation, static_argnums=1)(key, 777),
                                  shuffle.permutation(key, 777))


@pytest.mark.parametrize("n", [3, 4, 5])
def test_all_orders_equally_likely(n):
    # 200 expected draws of each of the n! orders; fails at p ~ 1e-6 for a uniform draw.
    stat, dof = order_chi2(n, 200 * math.factorial(n))
    assert stat < chi2_critical(dof), (stat, dof)


def test_the_order_test_detects_a_biased_family(monkeypatch):
    # The same test on a 4-round network (visibly biased for n = 4) must fail:
    # the uniformity test above has the power to catch a bad shuffle.
    monkeypatch.setattr(shuffle, "ROUNDS", 4)
    stat, dof = order_chi2(4, 200 * 24)
    assert stat > chi2_critical(dof), (stat, dof)


def test_positions_uniform_and_uncorrelated_for_large_n():
    n, count = 1000, 2000
    rows = draws(n, count, seed=1)
    # Where do the first, a middle and the last index land? 10 position buckets each.
    where = np.argsort(rows, axis=1)  # where[k, j] = position of index j in draw k
    for j in (0, 1, n // 2, n - 1):
        counts = np.bincount(where[:, j] * 10 // n, minlength=10)
        expected = count / 10
        stat = float(((counts - expected) ** 2 / expected).sum())
        assert stat < chi2_critical(9), (j, counts)
    # Rank correlation between index and position: mean 0, sd 1/sqrt(n-1) per draw.
    idx = np.arange(n) - (n - 1) / 2
    rho = (where - (n - 1) / 2) @ idx / (idx @ idx)
    assert abs(rho.mean()) < 5 / math.sqrt((n - 1) * count)
    assert 0.8 < rho.std() * math.sqrt(n - 1) < 1.2
    # Neighbours in the output are not neighbours in the input more often than chance (2/n).
    adjacent = np.mean(np.abs(np.diff(rows, axis=1)) == 1)
    assert adjacent < 3 * 2 / n


def test_negative_n_is_rejected():
    with pytest.raises(ValueError, match="n must be >= 0; got -1"):
        shuffle.permutation(jax.random.key(0), -1)


def test_vmaps_over_keys():
    keys = jax.random.split(jax.random.key(0), 4)
    batched = jax.vmap(lambda k: shuffle.permutation(k, 33))(keys)
    for k, row in zip(keys, batched):
        np.testing.assert_array_equal(row, shuffle.permutation(k, 33))
    assert batched.dtype == jnp.int32


@pytest.mark.parametrize("n,size", [(0, 4), (5, 8), (22, 30), (33, 64), (300, 1000), (1437, 1536)])
def test_padded_permutation_is_permutation_of_n_then_the_padding(n, size):
    key = jax.random.key(4)
    got = np.asarray(jax.jit(shuffle.padded_permutation, static_argnums=2)(key, n, size))
    assert sorted(got[:n].tolist()) == list(range(n)) and got[n:].tolist() == list(range(n, size))
    if shuffle.domain_size(n) == shuffle.domain_size(size):
        np.testing.assert_array_equal(got[:n], np.asarray(shuffle.permutation(key, n)))
    with pytest.raises(ValueError, match="size must be in"):
        shuffle.padded_permutation(key, 1, -1)
