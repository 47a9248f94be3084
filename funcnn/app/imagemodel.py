"""A trained image classifier, ready to answer one image at a time: what the playground serves.

``load(path)`` takes a run directory or a checkpoint and checks that its
network is a softmax classifier over a square ``k*k`` image; ``answer`` gives
the class probabilities, each hidden layer's activations and the saliency
``d p_label / d pixel``, all from funcnn's own ``forward``/``backward``.
Nothing here prints or reads argv.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import activations, checkpoint, data
from funcnn.app import config as cfglib
from funcnn.app import experiment
from funcnn.errors import InvalidArgument
from funcnn.network import Network

# A run directory's checkpoints, in the order the playground prefers them.
RUN_CHECKPOINTS = ("best.ckpt", "final.ckpt", "last.ckpt")


class Frame(NamedTuple):
    """How a data set's images were drawn, so the playground can draw a person's strokes the same way."""

    box: tuple[float, float]  # (height, width) in pixels of the k x k image that the digit is scaled into
    pen: float  # the stroke width, in pixels of the k x k image
    centre: str  # what is put at the image's centre: "box" (the bounding box's centre) or "mass" (the ink's)


# The bundled 8x8 digits (from 32x32 bitmaps counted in 4x4 blocks) span all 8 rows of every image
# (measured: each of the 1797 has ink in rows 0 and 7) and mostly columns 1 to 6, with strokes about
# 2 pixels wide, the bitmap's box centred. MNIST size-normalises the digit into a 20x20 box (aspect kept)
# and centres its centre of mass in 28x28, with 2-3 pixel strokes. Other sides get MNIST's proportions.
FRAMES = {8: Frame((8.0, 7.0), 2.0, "box"), 28: Frame((20.0, 20.0), 2.4, "mass")}


def frame(k: int) -> Frame:
    """The ``Frame`` for images of side ``k`` (``FRAMES``, else MNIST's proportions)."""
    return FRAMES.get(k, Frame((k * 20 / 28, k * 20 / 28), k * 2.4 / 28, "mass"))
SOFTMAX = activations.output("softmax")


class ImageModel(NamedTuple):
    """A checkpoint's network seen as a classifier of ``side x side`` images with pixels in [0, 1]."""

    net: Network
    params: list
    standardizer: data.Standardizer | None  # the run's training standardisation, or None
    side: int  # k: the image is k x k, input_size = k * k
    frame: Frame  # how the training images were drawn (FRAMES)
    name: str  # the run's name (its directory), for the page title
    checkpoint: Path
    config: dict | None  # the run's resolved config, or None
    answer: Callable[..., dict]  # (pixels [n, k*k] in [0, 1]) -> dict of arrays, jitted once (see make_answer)


def checkpoint_path(path) -> Path:
    """The checkpoint a playground path means: the file itself, or a run directory's best/final/last.

    Raises:
      FileNotFoundError: no such path, or a directory without a checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        for name in RUN_CHECKPOINTS:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p} holds none of {', '.join(RUN_CHECKPOINTS)}; give a run directory "
                                "written by 'funcnn train' or a .ckpt file.")
    if not p.exists():
        raise FileNotFoundError(f"no such run directory or checkpoint: {p}")
    return p


def image_side(net) -> int:
    """k for a softmax classifier whose input is a k x k image.

    Raises:
      ValueError: the input width is not a square, or the network is not a softmax classifier.
    """
    if net.output != SOFTMAX:
        raise InvalidArgument(f"the playground needs a softmax classifier; this network's output is "
                         f"{net.output.name!r} (a regression or multi-label model).")
    k = math.isqrt(net.input_size)
    if k * k != net.input_size or k < 2:
        raise InvalidArgument(f"the playground needs a square image as input; this network takes {net.input_size} "
                         f"features, which is not k*k for any image side k >= 2.")
    return k


def load(path) -> ImageModel:
    """Loads a run directory or checkpoint as an ``ImageModel``.

    Raises:
      FileNotFoundError, funcnn.checkpoint.CheckpointError: unreadable path.
      ValueError: not an image classifier (``image_side``).
    """
    ckpt_path = checkpoint_path(path)
    ckpt = checkpoint.load(ckpt_path)
    k = image_side(ckpt.net)
    dtype = jax.tree.leaves(ckpt.params)[0].dtype
    st = ckpt.extra.get("standardizer")
    stats = None if not st else data.Standardizer(jnp.asarray(st["mean"], dtype), jnp.asarray(st["std"], dtype))
    name = ckpt_path.parent.name if ckpt_path.parent.name else ckpt_path.stem
    return ImageModel(ckpt.net, ckpt.params, stats, k, frame(k), name, ckpt_path,
                      ckpt.config, make_answer(ckpt.net, ckpt.params, stats))


def make_answer(net, params, stats):
    """``answer(pixels [n, d]) -> {"probabilities" [n, m], "label" [n], "hidden" [...], "saliency" [n, d]}``.

    The saliency is ``d p_label / d pixel``: the softmax VJP of the one-hot of
    the predicted class (``net.output.vjp``) sent through ``net.backward`` with
    ``need_dx=True`` (the hand-derived ``dx`` path), then through the
    standardisation (``x_std = (x - mean) / std``, so ``d/dx = d/dx_std / std``).
    """
    dtype = jax.tree.leaves(params)[0].dtype

    @jax.jit
    def answer(pixels):
        x = pixels.astype(dtype)
        x = x if stats is None else data.standardize_apply(stats, x)
        z, y, cache = net.forward(params, x)  # z, y: [n, m]
        label = net.output.decide(y)  # [n]
        dy = jax.nn.one_hot(label, y.shape[-1], dtype=y.dtype)
        _, dx = net.backward(params, cache, net.output.vjp(z, y, dy), need_dx=True)  # dx: [n, d]
        if stats is not None:
            dx = dx / stats.std[None, :]  # [n, d] / [1, d]
        return {"probabilities": y, "label": label, "hidden": list(cache.post), "saliency": dx}

    return answer


def answer_one(model: ImageModel, pixels) -> dict:
    """The JSON-able answer for one image: ``pixels`` is ``[k*k]`` row-major in [0, 1]."""
    out = jax.device_get(model.answer(jnp.asarray(np.asarray(pixels, np.float64)[None, :])))
    return {"probabilities": np.asarray(out["probabilities"][0], np.float64).tolist(),
            "label": int(out["label"][0]),
            "hidden": [np.asarray(h[0], np.float64).tolist() for h in out["hidden"]],
            "saliency": np.asarray(out["saliency"][0], np.float64).tolist()}


def raw_test_split(cfg_dict: dict):
    """The run's own test images and labels, before standardisation: ``(x [n, d] in [0, 1], y [n])``.

    The split depends only on the seed, so turning standardisation off re-creates
    the same test rows with their raw pixels (what a person should be shown).
    """
    cfg = cfglib.config_from_dict(cfg_dict)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, standardize=False, augment=False))
    split = experiment.load_split(cfg)
    return np.asarray(split.x_test), np.asarray(split.y_test)
