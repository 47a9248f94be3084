"""Schedules against their formulas evaluated in NumPy float64, at many steps.

Steps include 0, every boundary, one either side of it, and far beyond the end.
Tolerance 1e-12 relative: float64 (conftest enables x64), and the reference is
the same closed-form expression, so only round-off may differ.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn.optim as optim
from funcnn import schedules

RTOL = ATOL = 1e-12
STEPS = np.array(sorted({0, 1, 2, 3, 4, 5, 9, 10, 11, 19, 20, 21, 49, 50, 51, 99, 100, 101,
                         149, 150, 151, 1000, 10**6}))


def evaluate(schedule, steps, use_jit):
    fn = jax.jit(schedule) if use_jit else schedule
    out = np.asarray(fn(jnp.asarray(steps, jnp.int32)))
    # Optimizers call schedules with a scalar int32 count; it must agree with
    # the vectorised call (schedules are elementwise in step).
    for i in (0, len(steps) // 2, len(steps) - 1):
        lr = fn(jnp.asarray(steps[i], jnp.int32))
        assert lr.shape == ()
        np.testing.assert_allclose(np.asarray(lr), out[i], rtol=RTOL, atol=ATOL)
    return out


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def use_jit(request):
    return request.param


def test_constant(use_jit):
    out = evaluate(schedules.constant_schedule(0.3), STEPS, use_jit)
    np.testing.assert_allclose(out, np.full(len(STEPS), 0.3), rtol=RTOL, atol=ATOL)


def test_piecewise_constant_boundary_is_inclusive(use_jit):
    sched = schedules.piecewise_constant_schedule(0.1, {50: 0.5, 10: 0.1, 100: 2.0})
    expected = []
    for t in STEPS:
        lr = 0.1
        for b, s in sorted({10: 0.1, 50: 0.5, 100: 2.0}.items()):
            if t >= b:
                lr *= s
        expected.append(lr)
    np.testing.assert_allclose(evaluate(sched, STEPS, use_jit), expected, rtol=RTOL, atol=ATOL)
    assert float(sched(9)) == pytest.approx(0.1) and float(sched(10)) == pytest.approx(0.01)


def test_step_decay(use_jit):
    sched = schedules.step_decay_schedule(0.2, 0.5, 10)
    expected = [0.2 * 0.5 ** math.floor(t / 10) for t in STEPS]
    np.testing.assert_allclose(evaluate(sched, STEPS, use_jit), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("end_value", [None, 0.01])
def test_exponential_decay(staircase, end_value, use_jit):
    sched = schedules.exponential_decay(0.1, 0.9, 20, staircase=staircase, end_value=end_value)
    p = STEPS / 20.0
    if staircase:
        p = np.floor(p)
    expected = 0.1 * 0.9**p
    if end_value is not None:
        expected = np.maximum(expected, end_value)
    np.testing.assert_allclose(evaluate(sched, STEPS, use_jit), expected, rtol=RTOL, atol=ATOL)


def test_exponential_growth_is_capped_by_end_value():
    sched = schedules.exponential_decay(0.1, 2.0, 10, end_value=1.0)
    steps = STEPS[STEPS < 1000]
    np.testing.assert_allclose(np.asarray(sched(jnp.asarray(steps))),
                               np.minimum(0.1 * 2.0 ** (steps / 10), 1.0), rtol=RTOL)
    assert float(sched(10**6)) == 1.0


def test_cosine_decay(use_jit):
    sched = schedules.cosine_decay_schedule(0.5, 100, alpha=0.1)
    tau = np.minimum(STEPS, 100) / 100
    expected = 0.5 * ((1 - 0.1) * 0.5 * (1 + np.cos(np.pi * tau)) + 0.1)
    out = evaluate(sched, STEPS, use_jit)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert out[0] == pytest.approx(0.5, abs=1e-15)
    assert out[list(STEPS).index(100)] == pytest.approx(0.05, abs=1e-15)


@pytest.mark.parametrize("init_value,warmup", [(0.0, 20), (0.01, 20), (0.01, 0)])
def test_warmup_cosine_decay(init_value, warmup, use_jit):
    peak, decay_steps, end = 1.0, 150, 0.05
    sched = schedules.warmup_cosine_decay_schedule(init_value, peak, warmup, decay_steps, end)
    expected = []
    for t in STEPS:
        if t < warmup:
            expected.append(init_value + (peak - init_value) * t / warmup)
        else:
            tau = min(t - warmup, decay_steps - warmup) / (decay_steps - warmup)
            expected.append(end + (peak - end) * 0.5 * (1 + math.cos(math.pi * tau)))
    out = evaluate(sched, STEPS, use_jit)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    # The landmarks the docstring promises: init at 0, peak at warmup end,
    # end_value at decay_steps (which includes the warmup) and after.
    at = {t: o for t, o in zip(STEPS, out)}
    assert at[0] == pytest.approx(init_value if warmup else peak, abs=1e-15)
    assert at[warmup] == pytest.approx(peak, abs=1e-15)
    assert at[150] == pytest.approx(end, abs=1e-15)
    assert at[10**6] == pytest.approx(end, abs=1e-15)


def test_aliases_and_reexports():
    assert schedules.cosine_decay is schedules.cosine_decay_schedule
    assert schedules.warmup_cosine_decay is schedules.warmup_cosine_decay_schedule
    for name in schedules.__all__:
        assert getattr(optim, name) is getattr(schedules, name)


def test_dtype_and_vmap():
    sched = schedules.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100)
    assert sched(3).dtype == jnp.float64 and sched(3).shape == ()
    steps = jnp.arange(0, 200, 7, dtype=jnp.int32)
    np.testing.assert_allclose(jax.vmap(sched)(steps), sched(steps), rtol=RTOL)


def test_float32_without_x64():
    with jax.enable_x64(False):
        for sched in [schedules.constant_schedule(0.1),
                      schedules.step_decay_schedule(0.1, 0.5, 3),
                      schedules.exponential_decay(0.1, 0.5, 3, staircase=True),
                      schedules.warmup_cosine_decay_schedule(0.0, 0.1, 3, 10)]:
            lr = jax.jit(sched)(jnp.asarray(4, jnp.int32))
            assert lr.dtype == jnp.float32 and lr.shape == ()


@pytest.mark.parametrize("make,match", [
    (lambda: schedules.step_decay_schedule(0.1, 0.5, 0), "step_size"),
    (lambda: schedules.step_decay_schedule(0.1, -0.5, 2), "decay_rate"),
    (lambda: schedules.exponential_decay(0.1, 0.5, 2.5), "transition_steps"),
    (lambda: schedules.cosine_decay_schedule(0.1, 0), "decay_steps"),
    (lambda: schedules.cosine_decay_schedule(float("nan"), 10), "init_value"),
    (lambda: schedules.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10), "decay_steps must exceed"),
    (lambda: schedules.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10), "warmup_steps"),
    (lambda: schedules.piecewise_constant_schedule(0.1, {-1: 0.5}), "boundary"),
    (lambda: schedules.piecewise_constant_schedule(0.1, {5: -0.5}), r"boundaries_and_scales\[5\]"),
])
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()
