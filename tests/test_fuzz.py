"""Property-based fuzzing of every reader of user files (issue 11): config, CSV, IDX, checkpoints.

Each generated input must end in a valid result or in funcnn's own error
(``funcnn.errors.FuncnnError``, or an ``OSError``), never another exception,
and never change a file. The default profile is quick (a few seconds in all);
run it long with::

    FUNCNN_FUZZ=long pytest tests/test_fuzz.py        # thousands of inputs per reader
"""
import contextlib
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings  # the dev extra
from hypothesis import strategies as st

import funcnn
from funcnn import checkpoint, config, data, optim, train
from funcnn.errors import FuncnnError

settings.register_profile("quick", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("FUNCNN_FUZZ", "quick"))

ALLOWED = (FuncnnError, OSError)
_KEYS = config._ALL_KEYS + ["model.hiden", "nosection.key", "training"]
_values = st.one_of(st.integers(-10, 10**6), st.floats(allow_nan=True), st.booleans(),
                    st.text(max_size=12), st.lists(st.integers(-3, 300), max_size=4))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, float):
        return repr(v).replace("inf", "inf").replace("nan", "nan")
    return repr(v)


@given(st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6), st.binary(max_size=40))
def test_config_loader_never_crashes(tmp_path_factory, entries, junk):
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "c.toml"
    sections: dict[str, list[str]] = {}
    for k, v in entries.items():
        s, _, key = k.partition(".")
        sections.setdefault(s, []).append(f"{key or 'x'} = {_toml_value(v)}")
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())
    raw = text.encode() + (junk if junk[:1] == b"#" else b"")
    path.write_bytes(raw)
    with contextlib.suppress(*ALLOWED):
        config.load_config(path)
    assert path.read_bytes() == raw


@given(st.lists(st.tuples(st.sampled_from(_KEYS), st.text(max_size=15)), max_size=4))
def test_set_strings_never_crash(overrides):
    with contextlib.suppress(*ALLOWED):
        config.load_config(None, [f"{k}={v}" for k, v in overrides])


@given(st.binary(max_size=300) | st.text(alphabet="0123456789.,-e \nabcxy\"", max_size=300).map(str.encode))
def test_csv_readers_never_crash(tmp_path_factory, raw):
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "d.csv"
    path.write_bytes(raw)
    for read in (lambda: data.load_csv(path, target="y"), lambda: data.load_csv_features(path)):
        with contextlib.suppress(*ALLOWED):
            read()
    assert path.read_bytes() == raw


@given(st.binary(max_size=64))
def test_idx_reader_never_crashes(tmp_path_factory, raw):
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "images-idx3-ubyte"
    path.write_bytes(raw)
    with contextlib.suppress(*ALLOWED):
        data.load_idx(path)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    net = funcnn.mlp([4, 3, 2])
    state = train.init_state(net, optim.adam(1e-2), key=jax.random.key(0))
    path = checkpoint.save(tmp_path_factory.mktemp("ck") / "c.ckpt", state, spec=net.spec,
                           extra={"standardizer": {"mean": [0.0] * 4, "std": [1.0] * 4}})
    return path.read_bytes(), [np.asarray(a) for a in jax.tree.leaves(state.params)]


def _edit_meta(raw: bytes, key, value) -> bytes:
    """The archive re-packed with one metadata field changed (valid zip CRCs, as a careful edit would be)."""
    import io
    import json

    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    meta = json.loads(members[checkpoint.META].tobytes())
    if key == "shape":
        meta["arrays"][0]["shape"] = value
    else:
        meta[key] = value
    members[checkpoint.META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**41) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=6)


@given(st.data())
def test_checkpoint_reader_never_crashes(tmp_path_factory, good_checkpoint, d):
    good, params = good_checkpoint
    raw = bytearray(good)
    how = d.draw(st.sampled_from(["truncate", "flip", "splice", "meta"]))
    if how == "truncate":
        raw = raw[:d.draw(st.integers(0, len(raw)))]
    elif how == "flip":
        for _ in range(d.draw(st.integers(1, 4))):
            raw[d.draw(st.integers(0, len(raw) - 1))] ^= 1 << d.draw(st.integers(0, 7))
    elif how == "splice":  # bytes of the JSON metadata or of a header replaced by arbitrary ones
        at = d.draw(st.integers(0, len(raw) - 1))
        new = d.draw(st.binary(min_size=1, max_size=16))
        raw[at:at + len(new)] = new
    else:  # edited JSON, wrong shapes (2^41 values included)
        key = d.draw(st.sampled_from(["spec", "extra", "arrays", "format_version", "opt_state", "rng", "shape",
                                      "sha256", "config"]))
        raw = bytearray(_edit_meta(good, key, d.draw(_json)))
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "c.ckpt"
    path.write_bytes(bytes(raw))
    try:
        ck = checkpoint.load(path)
    except ALLOWED:
        return
    finally:
        assert path.read_bytes() == bytes(raw)
    # It loaded, so it verified: it must hold exactly what was saved (the digest covers everything).
    for u, v in zip(jax.tree.leaves(ck.params), params, strict=True):
        np.testing.assert_array_equal(np.asarray(u), v)
