"""Checkpoints: a ``TrainState`` and everything needed to rebuild its network, in one file.

File format (``format_version`` 1), stated once:

    ONE uncompressed ``.npz`` (zip) archive, written atomically, holding
      __funcnn_checkpoint__   uint8 [k]: UTF-8 JSON metadata (below); its presence
                              is the file's magic
      params/{path}           each parameter leaf, named by its pytree path joined
                              by "/" (an MLP: params/{l}/W, params/{l}/b)
      opt_state/{i:04d}       the i-th leaf of ``jax.tree.leaves(state.opt_state)``
      step                    int32 [], optimizer steps taken
      rng                     the run's key as raw key data
                              (``jax.random.key_data``; uint32 [2] for threefry)

    metadata: {"format": "funcnn.checkpoint", "format_version": 1,
               "funcnn_version", "jax_version", "spec": net.spec.to_dict()
               (an MLPSpec or a NetworkSpec: users' pieces by name only),
               "config": dict | null, "extra": dict,
               "arrays": [{"name", "shape", "dtype"}, ...]   (every array entry),
               "opt_state": {"paths": [keystr of each leaf], "treedef": str},
               "rng": {"typed": bool, "impl": "threefry2x32" | null},
               "payload_sha256": hex digest of the arrays (names, dtypes,
               shapes and bytes, in the order of "arrays")}

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
  * The SHA-256 covers the arrays; the metadata member is covered by the zip
    CRC-32 (checked by ``zipfile`` on every read) and by strict parsing. A
    damaged file raises ``CheckpointError``; it never yields parameters.

Typical use::

    checkpoint.save("run/ckpt.npz", state, spec=net.spec, config=cfg_dict)
    ckpt = checkpoint.load("run/ckpt.npz")        # ckpt.net is rebuilt from the file
    state = checkpoint.restore_state(ckpt, opt)   # the exact TrainState
    state, history = train.fit(ckpt.net, opt, data, epochs=..., batch_size=..., state=state)
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from funcnn.mlp import MLPSpec, from_spec, spec_from_dict
from funcnn.network import Network, NetworkSpec, spec_from_dict as network_spec_from_dict
from funcnn.optim import GradientTransformation
from funcnn.train import TrainState

FORMAT = "funcnn.checkpoint"
FORMAT_VERSION = 1
META = "__funcnn_checkpoint__"  # the metadata member; its presence is the magic

__all__ = ["Checkpoint", "CheckpointError", "FORMAT", "FORMAT_VERSION", "load", "restore_state",
           "save"]


class CheckpointError(ValueError):
    """A file is not a readable funcnn checkpoint (truncated, corrupted, wrong format)."""


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
    from funcnn import __version__  # deferred: funcnn/__init__ may import this module

    path = Path(path)
    net = _network_of(spec, custom)
    if not all(hasattr(state, f) for f in TrainState._fields):
        raise TypeError(f"state must be a TrainState(params, opt_state, step, rng); "
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
        raise TypeError(f"state.step must be an integer scalar; got {step.dtype} {step.shape}.")
    arrays["step"] = step
    rng = state.rng
    typed = jax.dtypes.issubdtype(getattr(rng, "dtype", None), jax.dtypes.prng_key)
    if typed:
        arrays["rng"] = np.asarray(jax.random.key_data(rng))
        impl = str(jax.random.key_impl(rng))
    else:
        arrays["rng"] = _host("rng", "", rng)
        if arrays["rng"].dtype != np.uint32:
            raise TypeError(f"state.rng must be a jax.random key (typed, or raw uint32 data); "
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
        "payload_sha256": _digest(arrays),
    }
    blob = json.dumps(meta, allow_nan=False, sort_keys=True).encode("utf-8")
    members = {META: np.frombuffer(blob, dtype=np.uint8), **arrays}
    _atomic_write(path, members)
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
        raise TypeError(f"spec must be the network (net) or its spec (net.spec: an MLPSpec or a "
                        f"NetworkSpec); got {type(spec).__name__}.")
    try:
        return from_spec(spec, custom=custom)
    except ValueError as e:
        raise ValueError(f"cannot save: {e} (or pass the network itself: spec=net).") from None


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
    if jax.tree.structure(params) != jax.tree.structure(want):
        raise ValueError(f"state.params must have the structure of net.init's params "
                         f"({jax.tree.structure(want)}); got structure {jax.tree.structure(params)}.")
    for (name, where, p), (_, _, w) in zip(_param_entries(params), _param_entries(want)):
        if tuple(np.shape(p)) != w.shape:
            raise ValueError(f"state.params{where} has shape {tuple(np.shape(p))}, but the network "
                             f"needs {w.shape}.")
    return params


def _host(group: str, where: str, leaf) -> np.ndarray:
    a = np.asarray(jax.device_get(leaf))
    # A dtype that .npy cannot describe (e.g. bfloat16 is stored as raw 'V2')
    # would load as garbage: refuse it here instead.
    if a.dtype.kind not in "biuf" or np.dtype(a.dtype.str) != a.dtype:
        raise TypeError(f"cannot store {group}{where}: dtype {a.dtype} is not a standard "
                        "bool/int/float dtype (cast it, e.g. to float32).")
    # Not np.ascontiguousarray: it turns 0-d arrays (step) into shape (1,).
    return a if a.flags.c_contiguous else a.copy(order="C")


def _jsonable(name: str, d):
    if d is None:
        return None
    if not isinstance(d, dict):
        raise TypeError(f"{name} must be a dict or None; got {type(d).__name__}.")
    try:
        json.dumps(d, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be JSON-serialisable (dicts, lists, str, finite numbers, "
                        f"bools, None); {e}. Convert arrays with .tolist() and NumPy numbers "
                        "with float()/int().") from None
    return d


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name, a in arrays.items():
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.tobytes())  # C order, whatever the layout
    return h.hexdigest()


def _write_npz(f, members: dict[str, np.ndarray]) -> None:
    """Writes the archive to an open binary file (a seam for the interruption tests)."""
    np.savez(f, allow_pickle=False, **members)


def _atomic_write(path: Path, members: dict[str, np.ndarray]) -> None:
    directory = path.parent
    # Not tempfile.NamedTemporaryFile: it creates files with mode 0600, which
    # os.replace would carry over to the checkpoint. Mode 0666 here is reduced
    # by the umask, like any file the user creates. O_EXCL: never reuse a name.
    for _ in range(100):
        tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"could not create a temporary file in {str(directory)!r}.")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, members)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(directory)  # the rename itself survives a crash
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _fsync_dir(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: directories cannot be opened
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {name!r}.")
    if path.is_dir():
        raise CheckpointError(f"{name!r} is a directory, not a checkpoint file.")
    try:
        meta, arrays = _read(path)
    except CheckpointError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, UnicodeDecodeError,
            zipfile.BadZipFile, zlib.error) as e:
        raise CheckpointError(f"cannot read checkpoint {name!r}: {type(e).__name__}: {e}. The file "
                              "is truncated, corrupted or not a funcnn checkpoint.") from e

    def bad(what):
        return CheckpointError(f"checkpoint {name!r} is invalid: {what}.")

    try:
        d, custom = meta["spec"], tuple(custom)
        spec = network_spec_from_dict(d) if isinstance(d, dict) and "layers" in d \
            else spec_from_dict(d, custom=custom)
        net = from_spec(spec, custom=custom)
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"its network cannot be rebuilt ({str(e).rstrip('.')}). If it was built with your own "
                  "pieces (activations, losses, layers), pass them: checkpoint.load(path, custom=[...])") from e
    if not jax.config.jax_enable_x64:
        wide = sorted(k for k, a in arrays.items() if a.dtype.itemsize == 8 and a.dtype.kind in "iuf")
        if wide:
            raise CheckpointError(
                f"checkpoint {name!r} holds 64-bit arrays ({', '.join(wide[:3])}...) but "
                "jax_enable_x64 is off, so they would be narrowed; enable it first with "
                "jax.config.update('jax_enable_x64', True).")
    template = _template(net)
    wanted = _param_entries(template)
    param_names = [n for n, _, _ in wanted]
    opt_names = sorted(k for k in arrays if k.startswith("opt_state/"))
    expected = set(param_names) | set(opt_names) | {"step", "rng"}
    if set(arrays) != expected or opt_names != [f"opt_state/{i:04d}" for i in range(len(opt_names))]:
        missing, unexpected = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise bad(f"entries do not match the spec: missing {missing}, unexpected {unexpected}")
    for n, _, w in wanted:
        if arrays[n].shape != w.shape:
            raise bad(f"{n} has shape {arrays[n].shape}; the spec needs {w.shape}")
    paths = meta.get("opt_state", {}).get("paths")
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
    return Checkpoint(
        params=params,
        opt_state_leaves=tuple(put(arrays[k]) for k in opt_names),
        step=put(arrays["step"]),
        rng=rng,
        spec=net.spec,
        net=net,
        config=meta.get("config"),
        extra=meta.get("extra") or {},
        meta=meta,
    )


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    name = str(path)

    def bad(what):
        return CheckpointError(f"checkpoint {name!r} is invalid: {what}.")

    z = np.load(path, allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise bad("it is a single .npy array, not a funcnn .npz archive")
    with z:
        files = set(z.files)
        if META not in files:
            raise bad(f"no {META!r} entry, so it is not a funcnn checkpoint")
        blob = z[META]
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise bad(f"the {META!r} entry must be uint8 [k]; got {blob.dtype} {blob.shape}")
        meta = json.loads(blob.tobytes().decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise bad(f"format {got!r} is not {FORMAT!r}")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise bad(f"format_version {version!r} is not supported; this funcnn reads version "
                      f"{FORMAT_VERSION} (was it written by a newer funcnn?)")
        listed = meta.get("arrays")
        if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
            raise bad("its 'arrays' metadata is missing")
        names = [e.get("name") for e in listed]
        if set(names) != files - {META} or len(names) != len(set(names)):
            raise bad(f"entries differ from the metadata: missing {sorted(set(names) - files)}, "
                      f"unexpected {sorted(files - set(names) - {META})}")
        arrays = {}
        for e in listed:
            a = z[e["name"]]  # raises ValueError on an object (pickled) array
            if a.dtype.str != e.get("dtype") or list(a.shape) != e.get("shape"):
                raise bad(f"entry {e['name']!r} is {a.dtype.str} {list(a.shape)}; the metadata "
                          f"says {e.get('dtype')} {e.get('shape')}")
            arrays[e["name"]] = a
    if _digest(arrays) != meta.get("payload_sha256"):
        raise bad("the SHA-256 checksum of its arrays does not match (the data is corrupted)")
    return meta, arrays


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
        raise TypeError(f"ckpt must be a Checkpoint from checkpoint.load; got {type(ckpt).__name__}.")
    if not isinstance(opt, GradientTransformation):
        raise TypeError(f"opt must be a GradientTransformation; got {type(opt).__name__}.")
    template = jax.eval_shape(opt.init, ckpt.params)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    saved_paths = ckpt.meta["opt_state"]["paths"]
    hint = ("Was the run saved with a different optimizer or chain? The saved state is "
            f"{ckpt.meta['opt_state']['treedef']}.")
    if len(flat) != len(ckpt.opt_state_leaves):
        raise ValueError(f"the checkpoint holds {len(ckpt.opt_state_leaves)} optimizer-state "
                         f"leaves but opt.init(params) has {len(flat)}. {hint}")
    for i, ((p, want), got, saved_path) in enumerate(zip(flat, ckpt.opt_state_leaves, saved_paths)):
        path = jax.tree_util.keystr(p)
        if path != saved_path or want.shape != got.shape or want.dtype != got.dtype:
            raise ValueError(f"optimizer-state leaf {i} does not fit opt: saved {saved_path} "
                             f"{got.dtype}{list(got.shape)}, opt.init gives {path} "
                             f"{want.dtype}{list(want.shape)}. {hint}")
    opt_state = jax.tree.unflatten(treedef, list(ckpt.opt_state_leaves))
    return TrainState(ckpt.params, opt_state, ckpt.step, ckpt.rng)
