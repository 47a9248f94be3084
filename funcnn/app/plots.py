"""Plots of training runs, gradient checks and decision boundaries (optional matplotlib).

Every function here draws one figure and writes it to ``path`` as a PNG::

    plot_history(history, path)                      loss curves, validation accuracy
    plot_gradient_errors(report, path)               a GradcheckReport, per leaf and reference
    plot_decision_boundary(net, params, x, y, path)  2-D classifiers and regressors
    plot_curves(xs, series, path, xlabel=, ylabel=)  small generic helper for scripts
    plot_fit(net, params, x, y, path)                1-D regression: data and the fitted curve
    plot_image_grid(images, captions, path, ...)     images with a caption each (the mistakes)
    plot_confusion(matrix, path)                     a confusion matrix as a heat map

matplotlib is an optional dependency (``pip install "funcnn[plot]"``). It is
imported inside each function, never at module import, so ``import funcnn``
works without it. Figures are drawn on their own Agg canvas, without pyplot:
no display is needed, and a caller's pyplot figures and backend are left
alone. Each function creates the parent folder, writes atomically (a temporary
file in the same folder, then ``os.replace``: a reader never sees half a PNG),
releases its figure, and returns the ``Path`` written.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from funcnn import _files
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.network import describe

__all__ = ["plot_history", "plot_gradient_errors", "plot_decision_boundary", "plot_curves", "plot_image_grid",
           "plot_confusion", "plot_fit"]

# Reference colours stay fixed across plots so a reader can compare figures.
_REFERENCE_COLOURS = {"reverse": "tab:blue", "forward": "tab:orange", "finite_diff": "tab:green"}
# A zero error cannot sit on a log axis; it is drawn at this floor and says so.
_LOG_FLOOR = 1e-18


def _figure(nrows: int = 1, ncols: int = 1, *, figsize):
    """A new ``(figure, axes [nrows, ncols])`` on the Agg canvas; a clear ImportError without matplotlib.

    The figure is built without pyplot: no global backend switch (a caller's
    notebook keeps its own), no figure registry to leak into, nothing to close.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError('funcnn.plots needs matplotlib: pip install "funcnn[plot]" '
                          "(or pip install matplotlib).") from e
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path) -> Path:
    """Writes ``fig`` to ``path`` atomically and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:  # atomic, with the mode every other output gets (0666 less the umask)
        _files.atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight"))
    finally:
        fig.clear()  # drop the artists now rather than at garbage collection
    return path


def _history_lists(history) -> dict:
    """``{"train_loss", "val_loss", "val_accuracy", "iteration_losses"}`` lists from any accepted history form."""
    keys = ("train_loss", "val_loss", "val_accuracy")
    if isinstance(history, Mapping):
        return {k: list(history.get(k) or []) for k in (*keys, "iteration_losses")}
    if all(hasattr(history, k) for k in keys):  # funcnn.train.History
        return {k: list(getattr(history, k) or []) for k in keys} | {"iteration_losses": []}
    if isinstance(history, Sequence) and all(isinstance(r, Mapping) for r in history):
        # Per-epoch records, e.g. the lines of a metrics.jsonl file; a full-batch run's one record holds
        # its per-iteration losses.
        return {k: [r[k] for r in history if k in r] for k in keys} | {
            "iteration_losses": [v for r in history for v in r.get("iteration_losses") or []]}
    raise InvalidType("history must be a funcnn.train.History, a dict with train_loss/val_loss/val_accuracy "
                    f"lists, or a list of per-epoch dicts; got {type(history).__name__}.")


def plot_history(history, path, *, title: str | None = None) -> Path:
    """Loss curves of a training run and, when present, the validation accuracy.

    Args:
      history: a ``funcnn.train.History``, a dict with ``train_loss``,
        ``val_loss`` and ``val_accuracy`` lists (empty or missing lists are
        skipped), or a list of per-epoch dicts with those keys (the lines of
        a ``metrics.jsonl``).
      path: the PNG to write; parent folders are created.
      title: optional figure title.

    Returns:
      ``Path(path)``.

    Raises:
      TypeError: ``history`` is none of the accepted forms.
      ValueError: it holds no training loss.
      ImportError: matplotlib is not installed.
    """
    h = _history_lists(history)
    if not h["train_loss"] and not h["iteration_losses"]:
        raise InvalidArgument("history has no train_loss values to plot.")
    if h["iteration_losses"]:
        return _plot_iterations(h, path, title=title)
    panels = 2 if h["val_accuracy"] else 1
    fig, axes = _figure(1, panels, figsize=(5.5 * panels, 4))
    ax = axes[0, 0]
    ax.plot(np.arange(1, len(h["train_loss"]) + 1), h["train_loss"], label="train")
    if h["val_loss"]:
        ax.plot(np.arange(1, len(h["val_loss"]) + 1), h["val_loss"], label="validation")
    _log_if_wide(ax, h["train_loss"] + h["val_loss"])
    ax.set(xlabel="epoch", ylabel="loss", title="loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if panels == 2:
        ax = axes[0, 1]
        ax.plot(np.arange(1, len(h["val_accuracy"]) + 1), h["val_accuracy"], color="tab:green")
        ax.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _log_if_wide(ax, values) -> None:
    """Log scale when the losses span orders of magnitude and stay positive."""
    losses = np.asarray(values, dtype=float)
    if np.all(losses > 0) and losses.max() / losses.min() > 30:
        ax.set_yscale("log")


def _plot_iterations(h: dict, path, *, title: str | None) -> Path:
    """A full-batch run (L-BFGS, Hessian-free): one "epoch", so its curve is the loss per iteration."""
    trace = h["iteration_losses"]
    fig, axes = _figure(figsize=(5.5, 4))
    ax = axes[0, 0]
    ax.plot(np.arange(len(trace)), trace, label="train (full batch)", marker="o" if len(trace) <= 40 else None,
            markersize=3)
    if h["val_loss"]:  # measured once, at the end
        ax.plot([len(trace) - 1], h["val_loss"][-1:], "s", color="tab:orange", label="validation, at the end")
    _log_if_wide(ax, trace + h["val_loss"][-1:])
    ax.set(xlabel="iteration (0: the initial parameters)", ylabel="loss", title="loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_gradient_errors(report, path) -> Path:
    """The normwise relative error of each gradient leaf against each reference.

    One marker per (leaf, reference) on a log axis, leaves along the x axis;
    each tolerance is a dashed line naming the references it applies to. Exact
    agreement (error 0) cannot sit on a log axis: it is drawn as a hollow marker
    one decade below the smallest drawn value (so the axis is not stretched over
    many empty decades) and a note in the plot says so.

    Args:
      report: a ``funcnn.GradcheckReport`` (``funcnn.gradcheck(...)``).
      path: the PNG to write; parent folders are created.

    Returns:
      ``Path(path)``.

    Raises:
      ImportError: matplotlib is not installed.
    """
    leaves = list(dict.fromkeys(r.path for r in report.rows))
    refs = list(dict.fromkeys(r.reference for r in report.rows))
    fig, axes = _figure(figsize=(max(5.0, 0.9 * len(leaves) + 2), 4))
    ax = axes[0, 0]
    width = 0.6 / max(len(refs), 1)
    drawn = np.array([r.max_rel for r in report.rows] + [r.tolerance for r in report.rows], dtype=float)
    drawn = drawn[np.isfinite(drawn) & (drawn > 0)]
    zero_at = 10.0 ** (np.floor(np.log10(drawn.min())) - 1) if drawn.size else _LOG_FLOOR
    any_zero = False
    for j, ref in enumerate(refs):
        colour = _REFERENCE_COLOURS.get(ref)
        rows = {r.path: r for r in report.rows if r.reference == ref}
        xs = np.array([i + (j - (len(refs) - 1) / 2) * width for i, leaf in enumerate(leaves) if leaf in rows])
        errs = np.array([rows[leaf].max_rel for leaf in leaves if leaf in rows], dtype=float)
        zero = errs == 0
        any_zero |= bool(np.any(zero))
        errs = np.where(np.isfinite(errs), errs, np.nan)
        ax.scatter(xs[~zero], errs[~zero], color=colour, label=ref, zorder=3)
        if np.any(zero):
            ax.scatter(xs[zero], np.full(int(zero.sum()), zero_at), facecolors="none", edgecolors=colour, zorder=3,
                       label=f"{ref}: exactly 0")
    # One dashed line per distinct tolerance, naming the references it applies to
    # (reverse and forward share one), in their colour when it is a single one.
    tolerances: dict[float, list[str]] = {}
    for r in report.rows:
        tolerances.setdefault(r.tolerance, []).append(r.reference)
    for t, names in tolerances.items():
        names = list(dict.fromkeys(names))
        colour = _REFERENCE_COLOURS.get(names[0]) if len(names) == 1 else "0.3"
        ax.axhline(t, color=colour, linestyle="--", linewidth=1, alpha=0.8)
        ax.annotate(f"tolerance {t:.0e} ({', '.join(names)})", (len(leaves) - 0.5, t), color=colour,
                    fontsize=7, ha="right", va="bottom")
    ax.set_yscale("log")
    ax.set_xticks(range(len(leaves)), leaves, rotation=45 if len(leaves) > 6 else 0)
    ax.set_xlim(-0.5, len(leaves) - 0.5)
    ax.set(xlabel="leaf", ylabel="relative error")
    ax.set_title(getattr(report, "title", "gradient check") + "\nrelative error = max |manual - ref| / max |ref|",
                 fontsize=8)
    if any_zero:
        ax.annotate(f"hollow: exactly 0 (drawn at {zero_at:.0e})", (0.01, 0.01), xycoords="axes fraction",
                    fontsize=7, color="0.3")
    ax.grid(alpha=0.3, which="both", axis="y")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, path)


def _labels_for_colour(y) -> np.ndarray:
    """Integer labels [n], one-hot / probability rows [n, m] or values [n, 1] -> [n] numbers."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1)
    return y.reshape(y.shape[0])


def plot_decision_boundary(net, params, x, y, path, *, resolution: int = 200, split: str = "test",
                           standardized: bool = False) -> Path:
    """The network's prediction over the plane, with the data points on top.

    A grid of ``resolution x resolution`` points spans the data plus a 10 %
    margin. With one output (sigmoid or identity) the filled contour is that
    output (for a sigmoid, the probability, with its 0.5 level drawn); with
    several outputs it is the predicted class (argmax). Points are coloured by
    their label.

    Args:
      net: a network with ``input_size == 2``.
      params: its parameters (the grid is evaluated in their dtype).
      x: inputs ``[n, 2]``.
      y: labels ``[n]`` (int), one-hot rows ``[n, m]`` or targets ``[n, 1]``.
      path: the PNG to write; parent folders are created.
      resolution: grid points per axis (>= 2).
      split: which data the points are, for the legend ("test", "train", ...).
      standardized: the inputs are standardised features (the axis labels say so).

    Returns:
      ``Path(path)``.

    Raises:
      ValueError: ``x`` is not ``[n, 2]``, the network's input width is not 2,
        ``y`` has a different number of samples, or ``resolution < 2``.
      ImportError: matplotlib is not installed.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise InvalidArgument(f"plot_decision_boundary needs 2-D inputs x of shape [n, 2]; got {x.shape}. "
                         "Project higher-dimensional data to two features first.")
    if net.input_size != 2:
        raise InvalidArgument(f"plot_decision_boundary needs a network with 2 inputs; got input_size {net.input_size}.")
    labels = _labels_for_colour(y)
    if labels.shape[0] != x.shape[0]:
        raise InvalidArgument(f"y must have one label per sample ({x.shape[0]}); got shape {np.shape(y)}.")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise InvalidArgument(f"resolution must be an int >= 2; got {resolution!r}.")
    import jax
    import jax.numpy as jnp

    lo, hi = x.min(axis=0), x.max(axis=0)
    margin = 0.1 * np.maximum(hi - lo, 1e-6)
    g0 = np.linspace(lo[0] - margin[0], hi[0] + margin[0], resolution)
    g1 = np.linspace(lo[1] - margin[1], hi[1] + margin[1], resolution)
    G0, G1 = np.meshgrid(g0, g1)  # [resolution, resolution] each
    dtype = jax.tree.leaves(params)[0].dtype
    grid = jnp.asarray(np.stack([G0.ravel(), G1.ravel()], axis=1), dtype)  # [resolution^2, 2]
    out = np.asarray(net.apply(params, grid), dtype=np.float64)  # [resolution^2, m]

    fig, axes = _figure(figsize=(5.5, 4.5))
    ax = axes[0, 0]
    m = out.shape[1]
    if m == 1:
        Z = out[:, 0].reshape(G0.shape)
        if net.output.decide is not None:  # one output that decides: a probability
            cs = ax.contourf(G0, G1, Z, levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.6)
            ax.contour(G0, G1, Z, levels=[0.5], colors="k", linewidths=1)
            fig.colorbar(cs, ax=ax, label="P(y = 1)")
        else:
            cs = ax.contourf(G0, G1, Z, levels=20, cmap="viridis", alpha=0.6)
            fig.colorbar(cs, ax=ax, label="output")
    else:
        Z = np.argmax(out, axis=1).reshape(G0.shape)
        cs = ax.contourf(G0, G1, Z, levels=np.arange(m + 1) - 0.5, cmap="tab10", vmin=0, vmax=9, alpha=0.35)
        fig.colorbar(cs, ax=ax, ticks=range(m), label="predicted class")
    scatter_cmap = "tab10" if m > 1 else ("RdBu_r" if net.output.decide is not None else "viridis")
    kw = {"vmin": 0, "vmax": 9} if m > 1 else {}
    points = ax.scatter(x[:, 0], x[:, 1], c=labels, cmap=scatter_cmap, edgecolors="k", linewidths=0.5, s=18, **kw)
    if net.output.decide is not None:  # classes: one legend entry each
        handles, _ = points.legend_elements()
        classes = np.unique(labels)
        ax.legend(handles, [f"class {int(c)}" for c in classes], title=f"{split} points", fontsize=7,
                  title_fontsize=7, loc="best", framealpha=0.8)
    else:
        ax.annotate(f"points: the {split} split", (0.01, 0.01), xycoords="axes fraction", fontsize=7)
    unit = " (standardised)" if standardized else ""
    ax.set(xlabel=f"x[:, 0]{unit}", ylabel=f"x[:, 1]{unit}", title=describe(net))
    fig.tight_layout()
    return _save(fig, path)


def plot_fit(net, params, x, y, path, *, split: str = "test", standardized: bool = False) -> Path:
    """A 1-D regression: the data points and the network's curve over their range.

    Args:
      net: a network with one input and one output.
      params: its parameters.
      x: inputs ``[n, 1]``; y: targets ``[n]`` or ``[n, 1]``.
      path: the PNG to write.
      split: which data the points are, for the legend.
      standardized: the inputs are standardised (the axis label says so).

    Raises:
      ValueError: not one input and one output, or x and y of different lengths.
    """
    x, y = np.asarray(x), np.asarray(y)
    if net.input_size != 1 or net.output_size != 1 or x.ndim != 2 or x.shape[1] != 1:
        raise ValueError(f"plot_fit needs a network of 1 input and 1 output and x [n, 1]; got input_size "
                         f"{net.input_size}, output_size {net.output_size}, x {x.shape}.")
    y = y.reshape(y.shape[0], -1)[:, 0] if y.size == x.shape[0] else None
    if y is None:
        raise ValueError(f"y must hold one target per sample ({x.shape[0]}).")
    import jax
    import jax.numpy as jnp

    grid = np.linspace(x.min(), x.max(), 400)[:, None]  # [400, 1]
    dtype = jax.tree.leaves(params)[0].dtype
    curve = np.asarray(net.apply(params, jnp.asarray(grid, dtype)), np.float64)[:, 0]
    fig, axes = _figure(figsize=(6, 4))
    ax = axes[0, 0]
    ax.scatter(x[:, 0], y, s=10, color="0.55", label=f"{split} data")
    ax.plot(grid[:, 0], curve, color="tab:red", linewidth=2, label="network")
    ax.set(xlabel="x" + (" (standardised)" if standardized else ""), ylabel="y", title=describe(net))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(xs, series: dict, path, *, xlabel: str, ylabel: str, logy: bool = False,
                title: str | None = None) -> Path:
    """Several named curves over one x axis (the scripts' helper).

    Args:
      xs: x values ``[k]``: numbers, or strings (categories, evenly spaced).
      series: ``{label: [k] values}``; one line each, in insertion order.
      path: the PNG to write; parent folders are created.
      xlabel, ylabel: axis labels.
      logy: log-scale y axis; values <= 0 are not drawn (a log axis has no place for them).
      title: optional title.

    Returns:
      ``Path(path)``.

    Raises:
      ValueError: a series' length differs from ``len(xs)``.
      ImportError: matplotlib is not installed.
    """
    xs = list(xs)
    for label, ys in series.items():
        if len(ys) != len(xs):
            raise InvalidArgument(f"series {label!r} has {len(ys)} values but xs has {len(xs)}.")
    categorical = any(isinstance(v, str) for v in xs)
    positions = np.arange(len(xs), dtype=float) if categorical else np.asarray(xs, dtype=float)
    fig, axes = _figure(figsize=(max(6.0, 0.5 * len(xs)) if categorical else 6.0, 4))
    ax = axes[0, 0]
    for label, ys in series.items():
        ys = np.asarray(ys, dtype=float)
        if logy:
            ys = np.where(ys > 0, ys, np.nan)
        ax.plot(positions, ys, label=str(label), marker="o" if len(xs) <= 40 else None, markersize=3)
    if categorical:
        labels = [str(v) for v in xs]
        slanted = len(labels) > 5 or max(map(len, labels), default=0) > 10  # else they would overlap
        ax.set_xticks(positions, labels, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_image_grid(images, captions: Sequence[str], path, *, side: int, title: str, columns: int = 10) -> Path:
    """Grey-scale images in a grid, each with its caption (e.g. the misclassified test images).

    Args:
      images: ``[n, side * side]`` row-major pixels in [0, 1] (ink bright on black), n >= 1.
      captions: n short strings shown under the images.
      side: the image side k.
      title: the figure's title.
    """
    images = np.asarray(images, np.float64).reshape(-1, side, side)
    n = images.shape[0]
    if n == 0 or len(captions) != n:
        raise ValueError(f"plot_image_grid needs n >= 1 images and n captions; got {n} images, "
                         f"{len(captions)} captions.")
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = _figure(rows, cols, figsize=(1.25 * cols, 1.45 * rows + 0.5))
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(captions[i], fontsize=7.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(matrix, path, *, title: str = "confusion matrix") -> Path:
    """A confusion matrix ``[classes, classes]`` (rows: true, columns: predicted) as a heat map with counts."""
    cm = np.asarray(matrix)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"plot_confusion needs a square [classes, classes] matrix; got shape {cm.shape}.")
    k = cm.shape[0]
    fig, axes = _figure(figsize=(0.45 * k + 2.2, 0.45 * k + 1.6))
    ax = axes[0, 0]
    # Colour by the fraction of each true class, so small classes show their errors too.
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else ("tab:red" if i != j else "black"))
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return _save(fig, path)
