"""Initializers against the distributions their docstring table states.

Statistics on a 400 x 300 matrix (N = 120,000 draws). Standard errors:
  * sample std of a normal: sigma / sqrt(2N), i.e. 0.20 % relative;
    of a uniform (kurtosis 9/5): sqrt((9/5 - 1) / (4N)) = 0.13 % relative;
  * sample mean: sigma / sqrt(N) = 0.29 % of sigma;
  * sample kurtosis of a normal: sqrt(24 / N) = 0.014.
Tolerances are 5 standard errors or more (std 1 %, mean 1.5 % of sigma, kurtosis
0.1), so a correct initializer fails with probability < 1e-6 for any key, while
a wrong formula (e.g. fan_in for fan_out: 400 vs 300, a 15 % change in std, or
a truncated normal: kurtosis ~2.8) is far outside them. The keys are fixed, so
the test is deterministic anyway.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn
from funcnn import initializers

FAN_IN, FAN_OUT = 400, 300
STD_RTOL, MEAN_TOL, KURT_TOL = 0.01, 0.015, 0.1

# name -> (std, half-width of the support or None for a normal), from the docstring table
EXPECTED = {
    "xavier_normal": (math.sqrt(2 / (FAN_IN + FAN_OUT)), None),
    "xavier_uniform": (math.sqrt(6 / (FAN_IN + FAN_OUT)) / math.sqrt(3), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "he_normal": (math.sqrt(2 / FAN_IN), None),
    "lecun_normal": (math.sqrt(1 / FAN_IN), None),
    "uniform": (0.12 / math.sqrt(3), 0.12),  # U(-a, a) has std a / sqrt(3)
}


def draw(init, key=0, dtype=jnp.float64):
    """A [FAN_IN, FAN_OUT] sample as NumPy (keeps its dtype)."""
    return np.asarray(initializers.sample(initializers.get(init), jax.random.key(key), (FAN_IN, FAN_OUT),
                                          FAN_IN, FAN_OUT, dtype))


def test_every_initializer_is_covered():
    assert set(initializers.NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_distribution_matches_documented_formula(name):
    std, a = EXPECTED[name]
    W = draw(name)
    assert W.shape == (FAN_IN, FAN_OUT)
    np.testing.assert_allclose(W.std(), std, rtol=STD_RTOL)
    assert abs(W.mean()) < MEAN_TOL * std
    kurtosis = np.mean((W - W.mean()) ** 4) / W.var() ** 2
    if a is None:
        # a plain normal (3), not a truncated one (the docstring promises the stated std is the std)
        assert abs(kurtosis - 3.0) < KURT_TOL, kurtosis
    else:
        assert abs(kurtosis - 1.8) < KURT_TOL, kurtosis  # uniform: 9/5
        assert W.min() >= -a and W.max() <= a
        # 120,000 draws reach within 0.5 % of both ends (P(miss) = 0.9975^120000 ~ 0)
        assert W.max() > 0.995 * a and W.min() < -0.995 * a


def test_same_key_same_array_different_keys_differ():
    for name in EXPECTED:
        a, b, c = draw(name, 0), draw(name, 0), draw(name, 1)
        np.testing.assert_array_equal(a, b)
        assert not np.any(a == c), name  # continuous draws: no entry agrees by chance


def test_uniform_epsilon():
    assert initializers.get("uniform") == initializers.Initializer("uniform", 0.12)
    assert initializers.uniform() == initializers.Initializer("uniform", 0.12)
    W = draw(initializers.uniform(0.05), key=2)
    assert W.min() >= -0.05 and W.max() <= 0.05
    assert W.max() > 0.995 * 0.05 and W.min() < -0.995 * 0.05  # and it uses the whole range
    np.testing.assert_allclose(W.std(), 0.05 / math.sqrt(3), rtol=STD_RTOL)
    # an Initializer value passes through get(); one without epsilon gets the default
    assert initializers.get(initializers.uniform(0.05)).epsilon == 0.05
    assert initializers.get(initializers.Initializer("uniform")).epsilon == 0.12


# Shapes are shared between tests on purpose: every new (shape, dtype) of a
# random draw costs an XLA compile.
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
def test_dtype_is_respected(dtype):
    for name in EXPECTED:
        W = draw(name, dtype=dtype)
        assert W.dtype == dtype and W.shape == (FAN_IN, FAN_OUT), name
    if dtype == jnp.float32:
        # float32 draws follow the formula too
        np.testing.assert_allclose(draw("he_normal", dtype=dtype).std(), math.sqrt(2 / FAN_IN), rtol=STD_RTOL)


def test_network_init_uses_the_layer_fans_and_zero_biases():
    # he_normal in a 400 -> 300 -> 400 network: std sqrt(2/400) then sqrt(2/300).
    net = funcnn.mlp([FAN_IN, FAN_OUT, FAN_IN], init="he_normal")
    p = net.init(jax.random.key(0), dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(p[0]["W"]).std(), math.sqrt(2 / FAN_IN), rtol=STD_RTOL)
    np.testing.assert_allclose(np.asarray(p[1]["W"]).std(), math.sqrt(2 / FAN_OUT), rtol=STD_RTOL)
    assert all(float(jnp.abs(l["b"]).max()) == 0.0 for l in p)  # default biases are zero


@pytest.mark.parametrize("name", ["he_normal", "xavier_uniform"])
def test_bias_init_same_draws_biases_like_the_weights(name):
    # 300 biases per init, pooled over 10 keys: 3,000 draws, std error 1.3 %
    # (normal); 6 % is > 4.5 standard errors.
    std, a = EXPECTED[name]
    net = funcnn.mlp([FAN_IN, FAN_OUT], init=name, bias_init="same")
    ps = [net.init(jax.random.key(k), dtype=jnp.float64)[0] for k in range(10)]
    W, b = np.asarray(ps[0]["W"]), np.concatenate([np.asarray(p["b"]) for p in ps])
    assert ps[0]["b"].shape == (FAN_OUT,) and np.all(b != 0)
    np.testing.assert_allclose(b.std(), std, rtol=0.06)
    np.testing.assert_allclose(W.std(), std, rtol=STD_RTOL)
    assert abs(b.mean()) < 5 * std / math.sqrt(b.size)
    # an independent draw, not a copy of a row or column of W
    assert not np.any(np.isin(ps[0]["b"], W))
    if a is not None:
        assert np.abs(b).max() <= a
    # deterministic in the key, different across keys
    np.testing.assert_array_equal(np.asarray(net.init(jax.random.key(0), dtype=jnp.float64)[0]["b"]),
                                  np.asarray(ps[0]["b"]))
    assert not np.any(np.asarray(ps[0]["b"]) == np.asarray(ps[1]["b"]))


def test_bias_init_same_with_uniform_epsilon_stays_in_range():
    net = funcnn.mlp([FAN_IN, FAN_OUT], init=initializers.uniform(0.05), bias_init="same")
    b = np.concatenate([np.asarray(net.init(jax.random.key(k), dtype=jnp.float64)[0]["b"]) for k in range(3)])
    assert np.abs(b).max() <= 0.05 and np.abs(b).max() > 0.049 and np.all(b != 0)


def test_bad_names_and_epsilons_raise():
    with pytest.raises(ValueError) as e:
        initializers.get("glorot")
    for name in initializers.NAMES:
        assert repr(name) in str(e.value)
    with pytest.raises(ValueError, match="Did you mean 'he_normal'"):
        initializers.get("he_norml")
    with pytest.raises(ValueError, match="init='glorot'"):
        initializers.get(initializers.Initializer("glorot"))
    for bad in (0, 0.0, -0.1, "0.1", None, True, float("nan")):
        with pytest.raises(ValueError, match="epsilon must be a positive finite number"):
            initializers.uniform(bad)
    with pytest.raises(ValueError, match="epsilon must be a positive finite number; got -0.05"):
        initializers.get(initializers.Initializer("uniform", -0.05))


@pytest.mark.parametrize("make", [lambda: initializers.uniform(float("inf")),
                                  lambda: initializers.get(initializers.Initializer("uniform", 0.0))],
                         ids=["inf", "zero-via-Initializer"])
def test_degenerate_epsilons_raise(make):
    with pytest.raises(ValueError, match="epsilon must be a positive finite number"):
        make()


def test_scale_of_uniform_without_epsilon_is_the_default_epsilon():
    # Initializer("uniform") spelled without epsilon means U(-0.12, 0.12), as get() says: never a None bound.
    assert initializers.scale(initializers.Initializer("uniform"), 3, 4) == ("uniform", 0.12)
    assert initializers.scale(initializers.Initializer("uniform", 0.5), 3, 4) == ("uniform", 0.5)
