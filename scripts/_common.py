"""Helpers the scripts share: a device-synchronised timer and CSV output. Not part of the library."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import jax
import numpy as np


def median_time(fn, repeats: int, *, warmup: int = 1, stat=np.median) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls (compilation).

    Every call's result is blocked on (``jax.block_until_ready``) before the
    clock stops, so asynchronous dispatch is not mistaken for speed.
    ``stat=np.min`` gives the best time instead (for a peak rate).
    """
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(stat(times))


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
