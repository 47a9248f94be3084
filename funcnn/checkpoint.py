"""Checkpoints: a ``TrainState`` and everything needed to rebuild its network, in one file.

File format (``format_version`` 2; version 1 files are still read), stated once:

    ONE uncompressed ``.npz`` (zip) archive, written atomically, holding
      __funcnn_checkpoint__   uint8 [k]: UTF-8 JSON metadata (below); its presence
                              is the file's magic
      params/{path}           each parameter leaf, named by its pytree path joined
                              by "/" (an MLP: params/{l}/W, params/{l}/b)
      opt_state/{i:04d}       the i-th leaf of ``jax.tree.leaves(state.opt_state)``
      step                    int32 [], optimizer steps taken
      rng                     the run's key as raw key data
                              (``jax.random.key_data``; uint32 [2] for threefry)

    metadata: {"format": "funcnn.checkpoint", "format_version": 2,
               "funcnn_version", "jax_version", "spec": net.spec.to_dict()
               (an MLPSpec or a NetworkSpec: users' pieces by name only),
               "config": dict | null, "extra": dict,
               "arrays": [{"name", "shape", "dtype"}, ...]   (every array entry),
               "opt_state": {"paths": [keystr of each leaf], "treedef": str},
               "rng": {"typed": bool, "impl": "threefry2x32" | null},
               "sha256": hex digest of the metadata (its JSON with sorted
               keys, all but this field) and of the arrays (names, dtypes,
               shapes and bytes, in the order of "arrays")}
    (version 1 had "payload_sha256", a digest of the arrays only.)

Why these choices:
  * One file, so a checkpoint appears or is replaced in one ``os.replace``;
    a directory could be seen half-written.
  * No pickle and no code anywhere: arrays are plain ``.npy`` members read
    with ``allow_pickle=False``; users' own activations, losses and layers are
    recorded by name and spec, and ``load(path, custom=[...])`` takes their
    values back. The optimizer state's NamedTuple structure is
    not serialised at all. ``restore_state(ckpt, opt)`` rebuilds it from
    ``opt.init(params)`` and checks every leaf's path, shape and dtype against
    the file, so the file never names Python types to import.
  * The SHA-256 covers the metadata and the arrays: an edited activation or
    standardiser mean would otherwise load and predict garbage. A damaged or
    edited file raises ``CheckpointError``; it never yields parameters.
  * Reading is bounded: every declared shape is checked against the spec (an
    optimizer-state leaf has at most as many values as the largest
    parameter) and each member's header before its data is read, so a file
    that claims 2^40 values, or decompresses to gigabytes, is refused
    without allocating it.

Typical use::

    checkpoint.save("run/ckpt.npz", state, spec=net.spec, config=cfg_dict)
    ckpt = checkpoint.load("run/ckpt.npz")        # ckpt.net is rebuilt from the file
    state = checkpoint.restore_state(ckpt, opt)   # the exact TrainState
    state, history = train.fit(ckpt.net, opt, data, epochs=..., batch_size=..., state=state)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from funcnn import _checks, _files
from funcnn import data as _data
from funcnn._version import __version__
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.mlp import MLPSpec, from_spec, spec_from_dict
from funcnn.network import Network, NetworkSpec
from funcnn.network import spec_from_dict as network_spec_from_dict
from funcnn.optim import GradientTransformation
from funcnn.train import TrainState

FORMAT = "funcnn.checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: the digest ("payload_sha256") covers the arrays only
META = "__funcnn_checkpoint__"  # the metadata member; its presence is the magic
DIGEST = "sha256"  # version 2's digest field: metadata (all but this field) and arrays
_META_MAX_BYTES = 64 << 20  # the metadata of the largest sane network is far smaller
_NPY_HEADER_MAX = 1 << 16  # a .npy member's header, before its data

__all__ = ["Checkpoint", "CheckpointError", "FORMAT", "FORMAT_VERSION", "load", "restore_state",
           "save", "standardizer_from_json", "standardizer_to_json"]


class CheckpointError(InvalidArgument):
    """A file is not a readable funcnn checkpoint (truncated, corrupted, wrong format)."""


class NeedsX64Error(CheckpointError):
    """The file holds 64-bit arrays (a float64 run) while ``jax_enable_x64`` is off."""


class Checkpoint(NamedTuple):
    """What ``load`` returns; turn it into a ``TrainState`` with ``restore_state``."""

    params: list  # the network's params (an MLP: L dicts {"W", "b"}), saved dtype
    opt_state_leaves: tuple  # jax.tree.leaves(opt_state) in order; structure via restore_state
    step: jax.Array  # shape=(), int32
    rng: jax.Array  # the run's key, same impl (typed) or raw uint32 data as saved
    spec: MLPSpec | NetworkSpec  # the network's spec
    net: Network  # from_spec(spec, custom=...): the architecture need not be restated
    config: dict | None  # the config dict given to save, or None
    extra: dict  # the extra dict given to save ({} if none)
    meta: dict  # the whole parsed metadata (see the module docstring)

    def preprocess(self, x) -> jax.Array:
        """Raw inputs as the run's network saw them: cast to the parameters' dtype, then standardised.

        ``funcnn train`` stores the training split's standardiser in
        ``extra["standardizer"]`` (``standardizer_to_json``); a checkpoint
        without one is used as is. This is exactly what ``funcnn predict`` and
        ``funcnn evaluate --data`` apply.

        Args:
          x: ``[n, input_size]`` real numbers (NumPy or JAX).

        Raises:
          TypeError / ValueError (funcnn errors): complex, non-numeric, empty,
            non-finite or wrongly shaped ``x``; a stored standardiser of the
            wrong size.
        """
        x = _checks.feature_rows("x", x, self.net.input_size)
        dtype = jax.tree.leaves(self.params)[0].dtype
        x = jax.numpy.asarray(x, dtype)
        stats = standardizer_from_json(self.extra.get("standardizer"), dtype, self.net.input_size)
        return x if stats is None else _data.standardize_apply(stats, x)

    def apply(self, x) -> jax.Array:
        """The network's outputs on raw inputs: ``net.apply(params, preprocess(x))``, ``[n, output_size]``."""
        return self.net.apply(self.params, self.preprocess(x))

    def predict(self, x) -> jax.Array:
        """Predictions on raw inputs: ``net.predict(params, preprocess(x))`` (labels for classifiers).

        >>> ck = checkpoint.load("runs/digits/best.ckpt")  # doctest: +SKIP
        >>> labels = ck.predict(x_raw)                      # doctest: +SKIP
        """
        return self.net.predict(self.params, self.preprocess(x))


def standardizer_to_json(stats) -> dict | None:
    """A ``data.Standardizer`` (or None) as the JSON ``extra["standardizer"]`` entry ``preprocess`` reads."""
    if stats is None:
        return None
    return {"mean": np.asarray(stats.mean).tolist(), "std": np.asarray(stats.std).tolist()}


def standardizer_from_json(d, dtype, num_features: int):
    """The ``data.Standardizer`` that ``standardizer_to_json`` wrote (or None), checked against the network."""
    if not d:
        return None
    try:
        mean, std = np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's standardizer is malformed ({e}).") from None
    if mean.shape != (num_features,) or std.shape != (num_features,) or not np.all(std > 0):
        raise CheckpointError(f"the checkpoint's standardizer must have {num_features} means and positive "
                              f"stds; got shapes {mean.shape}, {std.shape}.")
    return _data.Standardizer(jax.numpy.asarray(mean, dtype), jax.numpy.asarray(std, dtype))


# ----------------------------------------------------------------------------- save


def save(path, state: TrainState, *, spec, config: dict | None = None,
         extra: dict | None = None, overwrite: bool = False, custom=()) -> Path:
    """Writes ``state`` and the network spec to one checkpoint file, atomically.

    The archive is written to a temporary file in the destination directory,
    flushed and fsynced, then moved onto ``path`` with ``os.replace`` and the
    directory fsynced. If anything fails the temporary file is removed and a
    checkpoint already at ``path`` is untouched.

    Args:
      path: destination file (``str`` or ``os.PathLike``), used exactly as
        given; ``.npz`` is the conventional suffix. Its directory must exist.
      state: a ``TrainState``; ``params`` must match ``spec``, every leaf of
        ``opt_state`` must be a numeric array, ``step`` an integer scalar and
        ``rng`` a ``jax.random`` key (typed or raw uint32).
      spec: the network (``net``) or its spec (``net.spec``). A network with
        users' pieces is saved by passing the network itself (or its spec and
        the pieces in ``custom``).
      config: optional JSON-serialisable dict, e.g. the resolved run config.
      extra: optional JSON-serialisable dict of anything else (metrics, epoch).
      overwrite: replace an existing checkpoint at ``path``. Even then a
        directory or a file that is not a funcnn checkpoint is never replaced.
      custom: users' pieces that ``spec`` names (when a spec, not a network,
        is given).

    Returns:
      ``path`` as a ``Path``.

    Raises:
      FileExistsError: ``path`` exists and ``overwrite`` is False, or it exists
        and is not a funcnn checkpoint.
      IsADirectoryError: ``path`` is a directory.
      FileNotFoundError: the directory of ``path`` does not exist.
      TypeError: ``state``/``spec`` of the wrong type, a non-numeric leaf, or
        ``config``/``extra`` not JSON-serialisable.
      ValueError: ``params`` that do not match ``spec``.
    """

    path = Path(path)
    net = _network_of(spec, custom)
    if not all(hasattr(state, f) for f in TrainState._fields):
        raise InvalidType(f"state must be a TrainState(params, opt_state, step, rng); "
                        f"got {type(state).__name__}.")
    _check_destination(path, overwrite)

    arrays: dict[str, np.ndarray] = {}
    for name, where, leaf in _param_entries(_check_params_match(state.params, net)):
        arrays[name] = _host("params", where, leaf)
    flat, treedef = jax.tree_util.tree_flatten_with_path(state.opt_state)
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    for i, (p, leaf) in enumerate(flat):
        arrays[f"opt_state/{i:04d}"] = _host("opt_state", jax.tree_util.keystr(p), leaf)
    step = _host("step", "", state.step)
    if step.shape != () or step.dtype.kind not in "iu":
        raise InvalidType(f"state.step must be an integer scalar; got {step.dtype} {step.shape}.")
    arrays["step"] = step
    rng = state.rng
    typed = jax.dtypes.issubdtype(getattr(rng, "dtype", None), jax.dtypes.prng_key)
    if typed:
        arrays["rng"] = np.asarray(jax.random.key_data(rng))
        impl = str(jax.random.key_impl(rng))
    else:
        arrays["rng"] = _host("rng", "", rng)
        if arrays["rng"].dtype != np.uint32:
            raise InvalidType(f"state.rng must be a jax.random key (typed, or raw uint32 data); "
                            f"got dtype {arrays['rng'].dtype}.")
        impl = None

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "funcnn_version": __version__,
        "jax_version": jax.__version__,
        "spec": net.spec.to_dict(),
        "config": _jsonable("config", config),
        "extra": _jsonable("extra", extra) or {},
        "arrays": [{"name": k, "shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()],
        "opt_state": {"paths": paths, "treedef": str(treedef)},
        "rng": {"typed": typed, "impl": impl},
    }
    meta[DIGEST] = _digest(arrays, meta)
    blob = json.dumps(meta, allow_nan=False, sort_keys=True).encode("utf-8")
    members = {META: np.frombuffer(blob, dtype=np.uint8), **arrays}
    _files.atomic_write(path, lambda f: _write_npz(f, members))
    return path


def _check_destination(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path {str(path)!r} is a directory; a checkpoint is "
                                "one file, e.g. 'run/ckpt.npz'. Directories are never replaced.")
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write checkpoint {str(path)!r}: directory "
                                f"{str(parent)!r} does not exist (create it first).")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"checkpoint path {str(path)!r} already exists; pass "
                                  "overwrite=True to replace it, or choose another path.")
        if not _is_checkpoint(path):
            raise FileExistsError(f"{str(path)!r} exists and is not a funcnn checkpoint; refusing "
                                  "to replace it even with overwrite=True. Remove it yourself "
                                  "or choose another path.")


def _is_checkpoint(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return META + ".npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _network_of(spec, custom) -> Network:
    if isinstance(spec, Network):
        return spec
    if not isinstance(spec, (MLPSpec, NetworkSpec)):
        raise InvalidType(f"spec must be the network (net) or its spec (net.spec: an MLPSpec or a "
                        f"NetworkSpec); got {type(spec).__name__}.")
    try:
        return from_spec(spec, custom=custom)
    except ValueError as e:
        raise InvalidArgument(f"cannot save: {e} (or pass the network itself: spec=net).") from None


def _param_entries(params):
    """``(entry name, keystr, leaf)`` for every parameter leaf: ``params/0/W``, ``params/2/0/W``, ..."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [str(getattr(k, "idx", getattr(k, "key", k))) for k in path]
        out.append(("params/" + "/".join(parts), jax.tree_util.keystr(path), leaf))
    return out


def _template(net: Network):
    # eval_shape: the expected structure without drawing any numbers.
    return jax.eval_shape(lambda k: net.init(k), jax.random.key(0))


def _check_params_match(params, net: Network):
    want = _template(net)
    if not _checks.same_structure(params, want):
        raise InvalidArgument(f"state.params must have the structure of net.init's params "
                         f"({jax.tree.structure(want)}); got structure {jax.tree.structure(params)}.")
    for (_, where, p), (_, _, w) in zip(_param_entries(params), _param_entries(want)):
        if tuple(np.shape(p)) != w.shape:
            raise InvalidArgument(f"state.params{where} has shape {tuple(np.shape(p))}, but the network "
                             f"needs {w.shape}.")
    return params


def _host(group: str, where: str, leaf) -> np.ndarray:
    a = np.asarray(jax.device_get(leaf))
    # A dtype that .npy cannot describe (e.g. bfloat16 is stored as raw 'V2')
    # would load as garbage: refuse it here instead.
    if a.dtype.kind not in "biuf" or np.dtype(a.dtype.str) != a.dtype:
        raise InvalidType(f"cannot store {group}{where}: dtype {a.dtype} is not a standard "
                        "bool/int/float dtype (cast it, e.g. to float32).")
    # Not np.ascontiguousarray: it turns 0-d arrays (step) into shape (1,).
    return a if a.flags.c_contiguous else a.copy(order="C")


def _jsonable(name: str, d):
    if d is None:
        return None
    if not isinstance(d, dict):
        raise InvalidType(f"{name} must be a dict or None; got {type(d).__name__}.")
    try:
        json.dumps(d, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidType(f"{name} must be JSON-serialisable (dicts, lists, str, finite numbers, "
                        f"bools, None); {e}. Convert arrays with .tolist() and NumPy numbers "
                        "with float()/int().") from None
    return d


def _digest(arrays: dict[str, np.ndarray], meta: dict | None = None) -> str:
    """SHA-256 of the metadata (version 2: all of it but the digest; version 1: none) and the arrays."""
    h = hashlib.sha256()
    if meta is not None:
        body = {k: v for k, v in meta.items() if k != DIGEST}
        h.update(json.dumps(body, allow_nan=False, sort_keys=True).encode("utf-8") + b"\0")
    for name, a in arrays.items():
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.tobytes())  # C order, whatever the layout
    return h.hexdigest()


def _write_npz(f, members: dict[str, np.ndarray]) -> None:
    """Writes the archive to an open binary file (a seam for the interruption tests)."""
    np.savez(f, allow_pickle=False, **members)


# ----------------------------------------------------------------------------- load


def load(path, *, custom=()) -> Checkpoint:
    """Reads and verifies a checkpoint written by ``save``; never unpickles anything.

    Every entry is checked against the metadata (names, shapes, dtypes) and the
    SHA-256 of the arrays is verified before anything is returned; the network
    is rebuilt from the stored spec.

    Args:
      path: the checkpoint file (``str`` or ``os.PathLike``).
      custom: users' pieces the network was built with (``Activation``,
        ``OutputActivation``, ``Loss``, ``Layer`` values): the file records
        them by name and spec only.

    Returns:
      A ``Checkpoint``; arrays are JAX arrays bit-identical to those saved.

    Raises:
      FileNotFoundError: no file at ``path``.
      CheckpointError (a ValueError): the file is truncated, corrupted, not a
        funcnn checkpoint, of an unknown format version, has missing or
        unexpected entries or an object (pickled) array; the message names
        the path and the problem. Also if it holds 64-bit arrays while
        ``jax_enable_x64`` is off (they would be silently narrowed), or if
        its network names a user's piece not given in ``custom`` (the message
        names the piece).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidType(f"path must be a file name (str or os.PathLike); got {type(path).__name__}.")
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {name!r}.")
    if path.is_dir():
        raise CheckpointError(f"{name!r} is a directory, not a checkpoint file.")

    def bad(what):
        return CheckpointError(f"checkpoint {name!r} is invalid: {what}.")

    meta, net, arrays = _read_verified(path, name, tuple(custom), bad)
    return _assemble(meta, net, arrays, bad)


def _read_verified(path: Path, name: str, custom: tuple, bad) -> tuple[dict, Network, dict]:
    """The file's metadata, rebuilt network and arrays, with the digest and the x64 mode checked."""
    try:
        with zipfile.ZipFile(path) as zf:
            meta = _read_meta(zf, bad)
            net = _rebuild(meta, custom, bad)
            arrays = _read_arrays(zf, meta, net, bad)
    except CheckpointError:
        raise
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{name!r} is not a funcnn checkpoint: it is not a zip (.npz) archive "
                              f"({e}); it may be truncated, corrupted or another kind of file.") from e
    except (EOFError, ValueError, KeyError, UnicodeDecodeError, zlib.error, NotImplementedError) as e:
        raise CheckpointError(f"cannot read checkpoint {name!r}: {type(e).__name__}: {e}. The file "
                              "is truncated, corrupted or not a funcnn checkpoint.") from e
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), name) from e
    if meta["format_version"] == 1:
        ok = _digest(arrays) == meta.get("payload_sha256")
    else:
        ok = _digest(arrays, meta) == meta.get(DIGEST)
    if not ok:
        raise bad("the SHA-256 checksum of its metadata and arrays does not match (the file was edited "
                  "or corrupted)")
    if not _checks.x64_enabled():
        wide = sorted(k for k, a in arrays.items() if a.dtype.itemsize == 8 and a.dtype.kind in "iuf")
        if wide:
            raise NeedsX64Error(
                f"checkpoint {name!r} holds 64-bit arrays ({', '.join(wide[:3])}...) but "
                "jax_enable_x64 is off, so they would be narrowed; enable it first with "
                "jax.config.update('jax_enable_x64', True).")
    return meta, net, arrays


def _assemble(meta: dict, net: Network, arrays: dict, bad) -> Checkpoint:
    """The ``Checkpoint`` of verified ``arrays``: parameters in the network's tree, the key rebuilt."""
    template = _template(net)
    param_names = [n for n, _, _ in _param_entries(template)]
    opt_names = sorted(k for k in arrays if k.startswith("opt_state/"))
    paths = meta.get("opt_state", {}).get("paths") if isinstance(meta.get("opt_state"), dict) else None
    if not isinstance(paths, list) or len(paths) != len(opt_names):
        raise bad("its optimizer-state paths do not match its optimizer-state entries")
    rng_meta = meta.get("rng")
    if not isinstance(rng_meta, dict) or not isinstance(rng_meta.get("typed"), bool):
        raise bad("its 'rng' metadata is missing")
    if arrays["step"].shape != () or arrays["step"].dtype.kind not in "iu":
        raise bad(f"step must be an integer scalar; got {arrays['step'].dtype} {arrays['step'].shape}")

    put = jax.device_put  # bit-exact host -> device copy
    params = jax.tree.unflatten(jax.tree.structure(template), [put(arrays[n]) for n in param_names])
    if rng_meta["typed"]:
        try:
            rng = jax.random.wrap_key_data(put(arrays["rng"]), impl=rng_meta["impl"])
        except (TypeError, ValueError) as e:
            raise bad(f"its key (impl {rng_meta.get('impl')!r}) cannot be rebuilt ({e})") from e
    else:
        rng = put(arrays["rng"])
    extra = meta.get("extra") or {}
    if not isinstance(extra, dict):
        raise bad("its 'extra' metadata is not a dict")
    return Checkpoint(
        params=params,
        opt_state_leaves=tuple(put(arrays[k]) for k in opt_names),
        step=put(arrays["step"]),
        rng=rng,
        spec=net.spec,
        net=net,
        config=meta.get("config"),
        extra=extra,
        meta=meta,
    )


def _read_meta(zf: zipfile.ZipFile, bad) -> dict:
    """The parsed metadata, with its format, version and array list checked."""
    names = set(zf.namelist())
    if META + ".npy" not in names:
        raise bad(f"no {META!r} entry, so it is not a funcnn checkpoint")
    blob = _read_member(zf, META, np.dtype(np.uint8), None, _META_MAX_BYTES, bad)
    if blob.ndim != 1:
        raise bad(f"the {META!r} entry must be uint8 [k]; got {blob.dtype} {blob.shape}")
    meta = json.loads(blob.tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise bad(f"format {got!r} is not {FORMAT!r}")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise bad(f"format_version {version!r} is not supported; this funcnn reads versions "
                  f"{list(READABLE_VERSIONS)} (was it written by a newer funcnn?)")
    listed = meta.get("arrays")
    if not isinstance(listed, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("dtype"), str)
            and isinstance(e.get("shape"), list) and all(isinstance(n, int) and not isinstance(n, bool)
                                                         and n >= 0 for n in e["shape"]) for e in listed):
        raise bad("its 'arrays' metadata is missing or malformed")
    members = {n[:-4] for n in names if n.endswith(".npy")} - {META}
    listed_names = [e["name"] for e in listed]
    if set(listed_names) != members or len(listed_names) != len(set(listed_names)) \
            or len(names) != len(members) + 1:
        raise bad(f"entries differ from the metadata: missing {sorted(set(listed_names) - members)}, "
                  f"unexpected {sorted(members - set(listed_names))}")
    return meta


def _rebuild(meta: dict, custom: tuple, bad) -> Network:
    try:
        d = meta["spec"]
        spec = network_spec_from_dict(d) if isinstance(d, dict) and "layers" in d \
            else spec_from_dict(d, custom=custom)
        return from_spec(spec, custom=custom)
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"its network cannot be rebuilt ({str(e).rstrip('.')}). If it was built with your own "
                  "pieces (activations, losses, layers), pass them: checkpoint.load(path, custom=[...])") from e


def _read_arrays(zf: zipfile.ZipFile, meta: dict, net: Network, bad) -> dict[str, np.ndarray]:
    """Every array, each checked against the spec's sizes before a byte of it is read.

    The declared shapes bound what is read: parameters must have exactly the
    spec's shapes, every optimizer-state leaf (a per-parameter moment, a
    count) at most as many entries as the largest parameter, so a file that
    claims 2^40 values or decompresses to gigabytes is refused, not allocated.
    """
    wanted = {n: w.shape for n, _, w in _param_entries(_template(net))}
    biggest = max([math.prod(s) for s in wanted.values()] + [1])
    listed = {e["name"]: e for e in meta["arrays"]}
    expected_opt = [f"opt_state/{i:04d}" for i in range(sum(k.startswith("opt_state/") for k in listed))]
    expected = set(wanted) | set(expected_opt) | {"step", "rng"}
    if set(listed) != expected:
        missing, unexpected = sorted(expected - set(listed)), sorted(set(listed) - expected)
        raise bad(f"entries do not match the spec: missing {missing}, unexpected {unexpected}")
    arrays = {}
    for n, e in listed.items():
        shape = tuple(e["shape"])
        if n in wanted and shape != wanted[n]:
            raise bad(f"{n} has shape {shape}; the spec needs {wanted[n]}")
        limit = {"step": 1, "rng": 16}.get(n, biggest)
        if math.prod(shape) > limit:
            raise bad(f"{n} claims {math.prod(shape)} values; at most {limit} fit this network")
        try:
            dtype = np.dtype(e["dtype"])
        except TypeError as err:
            raise bad(f"entry {n!r} has an unknown dtype {e['dtype']!r}") from err
        if dtype.kind not in "biuf":
            raise bad(f"entry {n!r} has dtype {dtype} (object arrays cannot be loaded without pickle); "
                      "a checkpoint holds only bool/int/float arrays")
        arrays[n] = _read_member(zf, n, dtype, shape, math.prod(shape) * dtype.itemsize, bad)
    return {e["name"]: arrays[e["name"]] for e in meta["arrays"]}  # the metadata's order (the digest's)


def _read_member(zf: zipfile.ZipFile, name: str, dtype, shape, max_bytes: int, bad) -> np.ndarray:
    """One ``.npy`` member, never reading more than its header and ``max_bytes`` of data."""
    info = zf.getinfo(name + ".npy")
    if info.file_size > max_bytes + _NPY_HEADER_MAX:
        raise bad(f"entry {name!r} is {info.file_size} bytes uncompressed; at most "
                  f"{max_bytes + _NPY_HEADER_MAX} are allowed for it")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        got_shape, fortran, got_dtype = reader(f)
        if got_dtype.hasobject:
            raise bad(f"entry {name!r} holds Python objects (object arrays cannot be loaded without pickle)")
        if got_dtype != dtype or (shape is not None and tuple(got_shape) != shape):
            raise bad(f"entry {name!r} is {got_dtype.str} {list(got_shape)}; the metadata says "
                      f"{dtype.str} {None if shape is None else list(shape)}")
        nbytes = math.prod(got_shape) * got_dtype.itemsize
        if nbytes > max_bytes:
            raise bad(f"entry {name!r} claims {nbytes} bytes; at most {max_bytes} are allowed for it")
        raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise bad(f"entry {name!r} is truncated ({len(raw)} of {nbytes} bytes)")
    a = np.frombuffer(raw, dtype=got_dtype).reshape(got_shape, order="F" if fortran else "C")
    return np.ascontiguousarray(a) if a.ndim else a.copy()


# -------------------------------------------------------------------------- restore


def restore_state(ckpt: Checkpoint, opt: GradientTransformation) -> TrainState:
    """Rebuilds the exact ``TrainState`` saved, using ``opt`` for the optimizer state's structure.

    ``opt.init(ckpt.params)`` (traced abstractly, nothing is computed) gives the
    structure; the saved leaves are checked against it leaf by leaf (path,
    shape, dtype) and put in place, so ``train.fit(..., state=restored)``
    continues exactly where the saved run stopped.

    Args:
      ckpt: a ``Checkpoint`` from ``load``.
      opt: the same kind of ``GradientTransformation`` the run used (same
        optimizer and chain; hyperparameters may differ).

    Returns:
      ``TrainState(params, opt_state, step, rng)``, bit-identical to the saved one.

    Raises:
      TypeError: ``ckpt`` or ``opt`` of the wrong type.
      ValueError: the saved optimizer state does not fit ``opt`` (different
        optimizer or chain); the message names the first mismatching leaf.
    """
    if not isinstance(ckpt, Checkpoint):
        raise InvalidType(f"ckpt must be a Checkpoint from checkpoint.load; got {type(ckpt).__name__}.")
    if not isinstance(opt, GradientTransformation):
        raise InvalidType(f"opt must be a GradientTransformation; got {type(opt).__name__}.")
    template = jax.eval_shape(opt.init, ckpt.params)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    saved_paths = ckpt.meta["opt_state"]["paths"]
    hint = ("Was the run saved with a different optimizer or chain? The saved state is "
            f"{ckpt.meta['opt_state']['treedef']}.")
    if len(flat) != len(ckpt.opt_state_leaves):
        raise InvalidArgument(f"the checkpoint holds {len(ckpt.opt_state_leaves)} optimizer-state "
                         f"leaves but opt.init(params) has {len(flat)}. {hint}")
    for i, ((p, want), got, saved_path) in enumerate(zip(flat, ckpt.opt_state_leaves, saved_paths)):
        path = jax.tree_util.keystr(p)
        if path != saved_path or want.shape != got.shape or want.dtype != got.dtype:
            raise InvalidArgument(f"optimizer-state leaf {i} does not fit opt: saved {saved_path} "
                             f"{got.dtype}{list(got.shape)}, opt.init gives {path} "
                             f"{want.dtype}{list(want.shape)}. {hint}")
    opt_state = jax.tree.unflatten(treedef, list(ckpt.opt_state_leaves))
    return TrainState(ckpt.params, opt_state, ckpt.step, ckpt.rng)
