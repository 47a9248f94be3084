"""Checkpoints: bit-identical round trips, exact resume, damage detection, atomic writes."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnn
from funcnn import checkpoint, optim, train
from funcnn.checkpoint import CheckpointError

N, D, C = 42, 4, 3  # 42 = 5 batches of 8 + a partial batch of 2


def _data(dtype=jnp.float32):
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (N, D), dtype)
    y = jax.random.randint(ky, (N,), 0, C, dtype=jnp.int32)
    return x, y


def _net():
    return funcnn.mlp([D, 8, C], hidden="tanh", dropout=0.25)


OPTIMIZERS = {
    "adam": lambda: optim.adam(1e-2),
    "momentum": lambda: optim.momentum(1e-2, 0.9),
    "clip_adam": lambda: optim.chain(optim.clip_by_global_norm(0.5), optim.adam(1e-2)),
}


def _trained(opt, dtype=jnp.float32, key=None):
    """A fresh state with every leaf filled with arbitrary values (no zeros to hide behind)."""
    state = train.init_state(_net(), opt, key=jax.random.key(0) if key is None else key, dtype=dtype)
    rng = np.random.default_rng(0)

    def fill(a):
        if jnp.issubdtype(a.dtype, jnp.integer):
            return jnp.asarray(rng.integers(1, 100, a.shape), a.dtype)
        return jnp.asarray(rng.standard_normal(a.shape), a.dtype)

    return state._replace(params=jax.tree.map(fill, state.params),
                          opt_state=jax.tree.map(fill, state.opt_state), step=fill(state.step))


def _assert_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jax.dtypes.issubdtype(u.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(u) == jax.random.key_impl(v)
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(u, v, strict=True)  # bitwise for finite values


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_round_trip_is_bit_identical(tmp_path, name, dtype):
    opt = OPTIMIZERS[name]()
    state = _trained(opt, dtype)
    path = checkpoint.save(tmp_path / "ckpt.npz", state, spec=_net().spec,
                           config={"lr": 0.01, "sizes": [D, 8, C]}, extra={"epoch": 1})
    ckpt = checkpoint.load(path)
    restored = checkpoint.restore_state(ckpt, opt)
    _assert_identical(restored, state)
    assert restored.params[0]["W"].dtype == dtype
    assert ckpt.config == {"lr": 0.01, "sizes": [D, 8, C]} and ckpt.extra == {"epoch": 1}
    assert ckpt.meta["format"] == checkpoint.FORMAT and ckpt.meta["format_version"] == checkpoint.FORMAT_VERSION == 2
    assert ckpt.meta["rng"] == {"typed": True, "impl": str(jax.random.key_impl(state.rng))}


def test_raw_uint32_key_round_trip(tmp_path):
    opt = optim.sgd(0.1)
    state = _trained(opt, key=jax.random.PRNGKey(3))
    assert state.rng.dtype == jnp.uint32
    restored = checkpoint.restore_state(
        checkpoint.load(checkpoint.save(tmp_path / "c.npz", state, spec=_net().spec)), opt)
    _assert_identical(restored, state)


def test_network_is_rebuilt_from_the_file_alone(tmp_path):
    net, opt = _net(), optim.adam(1e-2)
    state = _trained(opt)
    path = checkpoint.save(tmp_path / "c.npz", state, spec=net.spec)
    ckpt = checkpoint.load(path)
    assert ckpt.spec == net.spec and ckpt.net is net
    x, _ = _data()
    np.testing.assert_array_equal(ckpt.net.apply(ckpt.params, x), net.apply(state.params, x))


def test_resume_is_exact(tmp_path):
    net, opt, data = _net(), optim.adam(1e-2), _data()
    fit = lambda epochs, **kw: train.fit(net, opt, data, epochs=epochs, batch_size=8, **kw)[0]
    straight = fit(4, key=jax.random.key(0))
    half = fit(2, key=jax.random.key(0))
    path = checkpoint.save(tmp_path / "half.npz", half, spec=net.spec)
    ckpt = checkpoint.load(path)
    resumed = fit(2, state=checkpoint.restore_state(ckpt, opt))
    assert int(resumed.step) == 4 * 6
    _assert_identical(resumed, straight)


def test_restore_into_a_different_optimizer_is_refused(tmp_path):
    state = _trained(optim.adam(1e-2))
    ckpt = checkpoint.load(checkpoint.save(tmp_path / "c.npz", state, spec=_net().spec))
    with pytest.raises(ValueError, match="different optimizer"):
        checkpoint.restore_state(ckpt, optim.momentum(0.1))
    with pytest.raises(ValueError, match=r"leaf 0 .*\[1\]\[0\]\.count"):
        checkpoint.restore_state(ckpt, optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2)))


# ------------------------------------------------------------------------ damage


@pytest.fixture
def saved(tmp_path):
    """A checkpoint whose array data dominates the file, and its state."""
    net, opt = funcnn.mlp([16, 64, 10]), optim.adam(1e-2)
    state = train.init_state(net, opt, key=jax.random.key(0))
    state = state._replace(params=jax.tree.map(lambda p: p + 1.0, state.params))
    return checkpoint.save(tmp_path / "ckpt.npz", state, spec=net.spec), state


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.25, 0.5, 0.9, 0.999])
def test_truncated_file_raises_a_clear_error(saved, fraction):
    path, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(CheckpointError, match=r"ckpt\.npz.*(truncated|invalid)"):
        checkpoint.load(path)


@pytest.mark.parametrize("where", ["file", "W"])
def test_flipped_byte_in_the_middle_raises_a_clear_error(saved, where):
    path, state = saved
    raw = bytearray(path.read_bytes())
    W = np.asarray(state.params[0]["W"])
    start = bytes(raw).find(W.tobytes())
    assert start > 0
    at = len(raw) // 2 if where == "file" else start + W.nbytes // 2
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"ckpt\.npz"):
        checkpoint.load(path)


def _rewrite(src, dst, change):
    """Re-packs an archive after ``change(members)``: the zip CRCs are then valid again."""
    with np.load(src, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    meta = json.loads(members.pop(checkpoint.META).tobytes())
    change(members, meta)
    if meta is not None:
        members[checkpoint.META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(dst, "wb") as f:
        np.savez(f, **members)


def test_changed_data_with_valid_zip_crc_fails_the_checksum(saved, tmp_path):
    path, _ = saved

    def change(members, meta):
        members["params/0/W"] = members["params/0/W"].copy()
        members["params/0/W"][0, 0] += 1

    _rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match="SHA-256"):
        checkpoint.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("change, message", [
    (lambda m, meta: meta.update(format="other"), "format 'other'"),
    (lambda m, meta: meta.update(format_version=3), "format_version 3 is not supported"),
    (lambda m, meta: m.pop("step"), r"missing \['step'\]"),
    (lambda m, meta: m.update(junk=np.zeros(3)), r"unexpected \['junk'\]"),
])
def test_wrong_format_or_entries_raise(saved, tmp_path, change, message):
    path, _ = saved
    _rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(tmp_path / "bad.npz")


def test_plain_npz_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "plain.npz", W=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a funcnn checkpoint"):
        checkpoint.load(tmp_path / "plain.npz")


def test_object_array_is_rejected_without_unpickling(saved, tmp_path):
    path, _ = saved
    src = dict(np.load(path, allow_pickle=False))
    src["params/0/W"] = np.array([{"evil": 1}, None], dtype=object)
    with open(tmp_path / "obj.npz", "wb") as f:
        np.savez(f, allow_pickle=True, **src)
    with pytest.raises(CheckpointError, match="(?i)object arrays cannot be loaded"):
        checkpoint.load(tmp_path / "obj.npz")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        checkpoint.load(tmp_path / "nothere.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        checkpoint.load(tmp_path)


# ------------------------------------------------------------------ safe writing


def test_existing_path_needs_overwrite(saved):
    path, state = saved
    spec = checkpoint.load(path).spec
    with pytest.raises(FileExistsError, match=r"ckpt\.npz.*overwrite=True"):
        checkpoint.save(path, state, spec=spec)
    moved = state._replace(step=state.step + 7)
    checkpoint.save(path, moved, spec=spec, overwrite=True)
    assert int(checkpoint.load(path).step) == int(state.step) + 7


def test_never_replaces_a_directory_or_a_foreign_file(saved, tmp_path):
    path, state = saved
    spec = checkpoint.load(path).spec
    with pytest.raises(IsADirectoryError, match="directory"):
        checkpoint.save(tmp_path, state, spec=spec, overwrite=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    with pytest.raises(FileExistsError, match="not a funcnn checkpoint"):
        checkpoint.save(notes, state, spec=spec, overwrite=True)
    assert notes.read_text() == "precious"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.save(tmp_path / "no" / "c.npz", state, spec=spec)


def _fail_replace(*args, **kwargs):
    raise OSError("disk on fire")


def _fail_midway(f, members):
    f.write(b"PK\x03\x04 half an archive")
    raise RuntimeError("killed mid-write")


@pytest.mark.parametrize("where", ["replace", "writer"])
def test_interrupted_save_keeps_the_previous_checkpoint(saved, monkeypatch, where):
    path, state = saved
    before = path.read_bytes()
    spec = checkpoint.load(path).spec
    if where == "replace":
        monkeypatch.setattr(checkpoint.os, "replace", _fail_replace)
    else:
        monkeypatch.setattr(checkpoint, "_write_npz", _fail_midway)
    with pytest.raises((OSError, RuntimeError)):
        checkpoint.save(path, state._replace(step=state.step + 1), spec=spec, overwrite=True)
    with pytest.raises((OSError, RuntimeError)):
        checkpoint.save(path.parent / "fresh.npz", state, spec=spec)
    monkeypatch.undo()
    assert sorted(os.listdir(path.parent)) == ["ckpt.npz"]  # no temp files, no fresh.npz
    assert path.read_bytes() == before
    _assert_identical(checkpoint.load(path).params, state.params)


def test_bad_arguments_to_save(saved, tmp_path):
    _, state = saved
    spec = checkpoint.load(saved[0]).spec
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] has shape"):
        checkpoint.save(tmp_path / "x.npz", state, spec=spec._replace(sizes=(15, 64, 10)))
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save(tmp_path / "x.npz", state, spec=spec, config={"a": np.zeros(2)})
    with pytest.raises(TypeError, match="MLPSpec"):
        checkpoint.save(tmp_path / "x.npz", state, spec=spec.to_dict())
    assert not (tmp_path / "x.npz").exists()


# ------------------------------------------------------------ issue 11: what the digest and the reader cover


@pytest.mark.parametrize("edit", [
    lambda meta: meta["spec"].update(hidden="sigmoid"),  # the activation: loads, predicts garbage
    lambda meta: meta["extra"].update(standardizer={"mean": [5.0] * 16, "std": [1.0] * 16}),
    lambda meta: meta.update(config={"data": {"path": "/etc/shadow"}}),
])
def test_edited_metadata_fails_the_checksum(saved, tmp_path, edit):
    path, _ = saved
    _rewrite(path, tmp_path / "bad.npz", lambda m, meta: edit(meta))
    with pytest.raises(CheckpointError, match="SHA-256"):
        checkpoint.load(tmp_path / "bad.npz")


def _v1_digest(arrays):
    """Version 1's digest, written out independently: names, dtypes, shapes and bytes of the arrays."""
    import hashlib

    h = hashlib.sha256()
    for name, a in arrays.items():
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_version_1_files_still_load(saved, tmp_path):
    path, state = saved

    def to_v1(members, meta):
        meta.pop("sha256")
        meta["format_version"] = 1
        meta["payload_sha256"] = _v1_digest({e["name"]: members[e["name"]] for e in meta["arrays"]})

    _rewrite(path, tmp_path / "v1.npz", to_v1)
    _assert_identical(checkpoint.load(tmp_path / "v1.npz").params, state.params)


def _npy_member(header_shape, dtype="<f4", data=b""):
    """A .npy member whose header claims ``header_shape``, followed by ``data``."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": header_shape})
    return buf.getvalue() + data


def _replace_member(src, dst, name, raw, compress=False):
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            body = raw if info.filename == name + ".npy" else zin.read(info)
            zout.writestr(info.filename, body, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)


def test_a_header_claiming_2_to_the_40_values_is_refused_before_allocating(saved, tmp_path):
    path, _ = saved
    _replace_member(path, tmp_path / "huge.npz", "opt_state/0001", _npy_member((1 << 40,)))
    with pytest.raises(CheckpointError, match="opt_state/0001"):
        checkpoint.load(tmp_path / "huge.npz")


def test_a_small_file_that_decompresses_to_gigabytes_is_refused_unread(saved, tmp_path, monkeypatch):
    path, _ = saved
    bomb = _npy_member((16, 64)) + bytes(8 << 20)  # 8 MB of zeros, 8 kB deflated: any size is refused unread
    _replace_member(path, tmp_path / "bomb.npz", "params/0/W", bomb, compress=True)
    assert (tmp_path / "bomb.npz").stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="params/0/W.*bytes uncompressed"):
        checkpoint.load(tmp_path / "bomb.npz")


@pytest.mark.parametrize("content, match", [
    (b"lr = 0.1\nname = 'not a checkpoint'\n", "not a zip"),
    (b"", "not a zip"),
])
def test_a_text_file_is_not_a_checkpoint(tmp_path, content, match):
    (tmp_path / "notes.ckpt").write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        checkpoint.load(tmp_path / "notes.ckpt")
    assert "pickle" not in str(e.value) and "notes.ckpt" in str(e.value)


def test_load_none_is_a_clear_type_error():
    with pytest.raises(TypeError, match="path must be a file name"):
        checkpoint.load(None)
