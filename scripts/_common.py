"""Helpers the scripts share: a device-synchronised timer and CSV output. Not part of the library."""
from __future__ import annotations

import contextlib
import csv
import time
from pathlib import Path

import jax
import numpy as np


def interleaved_times(candidates, repeats: int, *, warmup: int = 1, stat=np.median) -> dict:
    """``stat`` (median by default) of the seconds per call of each ``name -> fn``, timed round-robin.

    Every candidate is called ``warmup`` times first (compilation); then each
    repeat times every candidate once, so a slow spell of the machine hits all
    of them alike and ratios between them stay fair. Every call's result is
    blocked on (``jax.block_until_ready``) before the clock stops, so
    asynchronous dispatch is not mistaken for speed.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t)
    return {name: float(stat(ts)) for name, ts in times.items()}


def median_time(fn, repeats: int, *, warmup: int = 1, stat=np.median) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls (compilation).

    ``stat=np.min`` gives the best time instead (for a peak rate).
    """
    return interleaved_times({"fn": fn}, repeats, warmup=warmup, stat=stat)["fn"]


def write_csv(rows, path: Path, fields, *, float_fmt: str = ".6g") -> Path:
    """Writes dict rows with the columns ``fields``; floats as ``float_fmt``, None as empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = lambda v: "" if v is None else format(v, float_fmt) if isinstance(v, float) else v
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        for r in rows:
            w.writerow({k: fmt(r[k]) for k in fields})
    return path


def print_plot_written(png) -> None:
    """Prints where a figure went, or why there is none (``png`` is None without matplotlib)."""
    print(f"wrote {png}" if png else "matplotlib not installed: no plot (pip install \"funcnn[plot]\")")


@contextlib.contextmanager
def compilations():
    """The seconds of every XLA compilation inside the ``with`` block, as a list (``jax.monitoring``)."""
    seconds: list[float] = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            seconds.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seconds
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
