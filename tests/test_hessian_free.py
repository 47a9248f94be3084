"""Hessian-free: exact on a quadratic, better than gradient descent per gradient evaluation, usable from configs."""
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import funcnn
from funcnn import config as C
from funcnn import experiment, optim

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_quadratic_is_solved_in_one_newton_step():
    """f = 1/2 x'Ax - b'x with G = A: one step with tiny damping lands on A^-1 b (float64, < 1e-8)."""
    A = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    b = jnp.array([1.0, -2.0, 0.5])
    res = jax.jit(lambda x0: optim.hessian_free(jax.value_and_grad(lambda x: 0.5 * x @ A @ x - b @ x),
                                                lambda x, v: A @ v, x0, damping=1e-12, cg_tol=1e-12,
                                                tol=1e-9))(jnp.zeros(3))
    assert jnp.max(jnp.abs(res.params - jnp.linalg.solve(A, b))) < 1e-8
    assert bool(res.converged) and int(res.iterations) <= 2
    assert int(res.num_gnvps) <= 3 * int(res.iterations)  # CG on n = 3 needs at most 3 products


def test_losses_trace_the_value_after_each_iteration():
    """losses[k] is f after k outer iterations: the value of a run stopped there (the method is deterministic)."""
    c = jnp.array([0.5, 2.0, 4.0, 1.0, 8.0])

    def f(x):  # convex, not quadratic (several steps to the minimum x = log c); its Hessian is diag(e^x)
        return jnp.sum(jnp.exp(x) - c * x)

    vg, gv = jax.value_and_grad(f), (lambda x, v: jnp.exp(x) * v)
    x0 = jnp.zeros(5)
    res = optim.hessian_free(vg, gv, x0, max_iters=8, damping=1e-3)
    n = int(res.iterations)
    assert res.losses.shape == (9,) and n >= 4
    assert float(res.losses[0]) == float(f(x0)) and float(res.losses[n]) == float(res.value)
    assert bool((jnp.diff(res.losses[:n + 1]) <= 0).all())  # a step is taken only when it lowers f
    assert bool(jnp.isnan(res.losses[n + 1:]).all())
    for k in (1, 3):
        stopped = optim.hessian_free(vg, gv, x0, max_iters=k, damping=1e-3)
        assert float(res.losses[k]) == pytest.approx(float(stopped.value), rel=1e-12)


def test_beats_gradient_descent_at_equal_gradient_evaluations():
    """Counting each Gauss-Newton product as one gradient evaluation, HF's loss is lower than the best GD's."""
    net = funcnn.mlp([2, 6, 1], hidden="tanh", output="sigmoid", loss="binary_cross_entropy")
    key = jax.random.key(0)
    x = jax.random.normal(key, (64, 2))
    y = ((x[:, :1] * x[:, 1:]) > 0).astype(x.dtype)  # XOR-like quadrants: curved, not linearly separable
    p0 = net.init(jax.random.key(1), dtype=jnp.float64)
    res = jax.jit(lambda p: optim.hessian_free(lambda q: net.value_and_grad(q, x, y),
                                               lambda q, v: net.gnvp(q, x, y, v), p, max_iters=20,
                                               max_cg_iters=10))(p0)
    budget = int(res.num_evals) + int(res.num_gnvps)

    def gd(lr):
        def step(p, _):
            return jax.tree.map(lambda a, g: a - lr * g, p, net.grad(p, x, y)), None
        return net.loss(jax.lax.scan(step, p0, None, length=budget)[0], x, y)

    best_gd = min(float(v) for v in jax.jit(jax.vmap(gd))(jnp.array([0.1, 0.3, 1.0, 3.0])))
    assert float(res.value) < best_gd, (float(res.value), best_gd, budget)


def test_bad_arguments_are_named():
    f = jax.value_and_grad(lambda x: jnp.sum(x ** 2))
    with pytest.raises(ValueError, match="max_cg_iters"):
        optim.hessian_free(f, lambda x, v: v, jnp.zeros(2), max_cg_iters=0)
    with pytest.raises(ValueError, match="damping"):
        optim.hessian_free(f, lambda x, v: v, jnp.zeros(2), damping=0.0)
    with pytest.raises(TypeError, match="gnvp_fn"):
        optim.hessian_free(f, None, jnp.zeros(2))


def test_config_runs_hessian_free_full_batch():
    """optimizer.name = "hessian_free" runs from a config like lbfgs; mini-batches and build_optimizer refuse it."""
    over = ["optimizer.name=hessian_free", "optimizer.max_iters=5", "optimizer.cg_iters=5",
            "training.batch_size=0", "data.n_samples=40"]
    cfg = C.load_config(CONFIGS / "two_lines.toml", over)
    with pytest.raises(C.ConfigError, match="hessian_free"):
        C.build_optimizer(cfg.optimizer, 10)
    with pytest.raises(C.ConfigError, match="hessian_free' is full-batch"):
        C.load_config(CONFIGS / "two_lines.toml", over[:-2] + ["training.batch_size=8"])
    with pytest.raises(C.ConfigError, match="optimizer.damping"):
        C.load_config(CONFIGS / "two_lines.toml", over + ["optimizer.damping=0"])
    seen = []
    result = experiment.run(cfg, callback=lambda epoch, m, state: seen.append(m))
    (m,) = seen
    assert m["train_loss"] < m["initial_loss"] and m["gnvps"] > 0 and m["iterations"] <= 5
    trace = m["iteration_losses"]  # what history.png draws: one loss per iteration, the start included
    assert len(trace) == m["iterations"] + 1 and trace[-1] == m["train_loss"]
    assert trace[0] == pytest.approx(m["initial_loss"], rel=1e-6)
    assert jnp.isfinite(result.state.params[0]["W"]).all()
