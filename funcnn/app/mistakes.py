"""``funcnn mistakes``: the test images a trained classifier gets wrong, surest first.

``find`` computes (nothing printed); ``ascii_grid`` renders small images as
text; ``write_plots`` writes ``mistakes.png`` and ``confusion.png``;
``cmd_mistakes`` prints and writes. ``funcnn train`` calls ``write_plots``
for image classifiers when matplotlib is installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import metrics
from funcnn.app import config as cfglib
from funcnn.app import experiment, imagemodel
from funcnn.errors import InvalidArgument

SHADES = " .:-=+*#%@"  # ink from none to full, one character per tenth
ASCII_MAX_SIDE = 8  # larger images do not fit a terminal row of several images


class Mistakes(NamedTuple):
    """The misclassified rows of a test set, sorted by the confidence of the wrong answer (highest first)."""

    index: np.ndarray  # type: ignore[assignment]  # [e] rows of the test set (shadows tuple.index)
    true: np.ndarray  # [e] labels
    predicted: np.ndarray  # [e] the network's labels
    confidence: np.ndarray  # [e] p(predicted)
    p_true: np.ndarray  # [e] p(true label)
    confusion: np.ndarray  # [classes, classes] counts, rows true, columns predicted
    total: int  # test rows


def find(net, params, x, y) -> Mistakes:
    """The mistakes of ``net`` on ``x [n, d]`` (preprocessed as trained) with integer labels ``y [n]``."""
    # Jitted: an eager apply compiles every primitive on its own.
    p = np.asarray(jax.jit(net.apply)(params, x), np.float64)  # [n, classes]
    y = np.asarray(y).astype(np.int64)
    pred = p.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-p[wrong, pred[wrong]], kind="stable")]
    cm = np.asarray(metrics.confusion_matrix(jnp.asarray(y), jnp.asarray(pred), net.output_size))
    return Mistakes(order, y[order], pred[order], p[order, pred[order]], p[order, y[order]], cm, int(y.shape[0]))


def confused_pairs(cm, top: int = 5) -> list[tuple[int, int, int]]:
    """The ``top`` off-diagonal cells ``(true, predicted, count)`` with the most errors."""
    cm = np.array(cm)
    np.fill_diagonal(cm, 0)
    cells = [(int(i), int(j), int(cm[i, j])) for i, j in zip(*np.nonzero(cm), strict=True)]
    return sorted(cells, key=lambda c: (-c[2], c[0], c[1]))[:top]


def ascii_grid(images, captions, side: int, per_row: int = 8) -> str:
    """Images ``[n, side*side]`` in [0, 1] as text, ``per_row`` side by side, each two characters per pixel."""
    images = np.asarray(images).reshape(-1, side, side)
    blocks = []
    for start in range(0, images.shape[0], per_row):
        chunk, caps = images[start:start + per_row], captions[start:start + per_row]
        lines = ["  ".join(f"{c:<{2 * side}}" for c in caps)]
        for r in range(side):
            lines.append("  ".join("".join(2 * SHADES[min(9, int(v * 10))] for v in img[r]) for img in chunk))
        blocks.append("\n".join(line.rstrip() for line in lines))
    return "\n\n".join(blocks)


def _run_data(run_dir: Path):
    ckpt_path = imagemodel.checkpoint_path(run_dir)
    model = imagemodel.load(ckpt_path)
    if model.config is None:
        raise InvalidArgument(f"{ckpt_path} stores no config, so its test split cannot be re-created.")
    cfg = cfglib.config_from_dict(model.config)
    split = experiment.load_split(cfg)
    raw, _ = imagemodel.raw_test_split(model.config)
    return model, split, raw


def write_plots(out_dir: Path, model, found: Mistakes, raw, top: int) -> list[Path]:
    """``mistakes.png`` (the ``top`` surest mistakes) and ``confusion.png`` in ``out_dir``; needs matplotlib."""
    from funcnn.app import plots

    written = [plots.plot_confusion(found.confusion, out_dir / "confusion.png",
                                    title=f"{model.name}: confusion matrix on the test split")]
    n = min(top, found.index.shape[0])
    if n:
        caps = [f"true {t}, said {p}\np={c:.2f}" for t, p, c in
                zip(found.true[:n], found.predicted[:n], found.confidence[:n], strict=True)]
        written.append(plots.plot_image_grid(raw[found.index[:n]], caps, out_dir / "mistakes.png", side=model.side,
                                             title=f"{model.name}: {found.index.shape[0]} of {found.total} test "
                                             "images misclassified, surest first"))
    return written


def train_plots(run_dir: Path, cfg_dict: dict, net, params, split) -> list[Path]:
    """What ``funcnn train`` writes for an image classifier: ``write_plots`` of its test split; [] otherwise."""
    try:
        side = imagemodel.image_side(net)
    except ValueError:  # not a softmax classifier of square images: nothing to show
        return []
    if split.y_test.ndim != 1:
        return []
    model = imagemodel.ImageModel(net, params, split.standardizer, side, imagemodel.frame(side), run_dir.name,
                                  run_dir / "final.ckpt", cfg_dict,
                                  imagemodel.make_answer(net, params, split.standardizer))  # lazy: jit compiles on use
    raw, _ = imagemodel.raw_test_split(cfg_dict)
    return write_plots(run_dir, model, find(net, params, split.x_test, split.y_test), raw, 25)


def report_text(model, found: Mistakes, raw, top: int) -> str:
    e = found.index.shape[0]
    lines = [f"{model.name}: {e} of {found.total} test images misclassified ({100 * e / found.total:.2f}%)"]
    if e:
        lines.append(f"the {min(top, e)} surest mistakes (true -> predicted, p(predicted), p(true)):")
        for r in range(min(top, e)):
            lines.append(f"  test image {found.index[r]:>4}: {found.true[r]} -> {found.predicted[r]}  "
                         f"p={found.confidence[r]:.3f}  p(true)={found.p_true[r]:.3f}")
        pairs = confused_pairs(found.confusion)
        lines.append("most confused pairs (true -> predicted: count): "
                     + ", ".join(f"{t} -> {p}: {c}" for t, p, c in pairs))
        if model.side <= ASCII_MAX_SIDE:
            n = min(top, e)
            caps = [f"{t}->{p} {c:.2f}" for t, p, c in
                    zip(found.true[:n], found.predicted[:n], found.confidence[:n], strict=True)]
            lines += ["", ascii_grid(raw[found.index[:n]], caps, model.side)]
    return "\n".join(lines)


def cmd_mistakes(args) -> int:
    if args.top < 1:
        raise InvalidArgument(f"--top must be at least 1; got {args.top}.")
    model, split, raw = _run_data(Path(args.run_dir))
    found = find(model.net, model.params, split.x_test, split.y_test)
    print(report_text(model, found, raw, args.top))
    out_dir = Path(args.run_dir) if Path(args.run_dir).is_dir() else Path(args.run_dir).parent
    try:
        import matplotlib  # noqa: F401  (the optional extra)
    except ImportError:
        print("(install matplotlib for mistakes.png and confusion.png)")
        return 0
    for p in write_plots(out_dir, model, found, raw, args.top):
        print(f"wrote {p}")
    return 0


def register(sub) -> None:
    """Adds ``funcnn mistakes`` to the CLI's subparsers."""
    p = sub.add_parser("mistakes", help="the test images the network gets wrong, surest first",
                       description="List the misclassified test images of an image classifier's run, sorted by "
                       "the confidence of the wrong answer, as text (ASCII images for 8x8) and, with matplotlib, "
                       "mistakes.png and confusion.png in the run directory; and the most confused pairs.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (best.ckpt is used) or a checkpoint in one")
    p.add_argument("--top", type=int, default=25, help="how many mistakes to show (default 25)")
    p.set_defaults(fn=cmd_mistakes)
