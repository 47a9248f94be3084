"""Tests for funcnn.data: digits, splits, encoding, scaling, batching, generated sets, readers.

Expected numbers are written out by hand in each test; file-format tests build
their IDX and CSV files byte by byte in ``tmp_path``.
"""
import gzip
import math
import struct
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import data

KEY = jax.random.key(0)
# One size for most generated sets and splits: every new shape costs a compilation.
N = 100


# --------------------------------------------------------------------------- digits


def test_load_digits_shape_dtype_range_and_classes():
    x, y = data.load_digits()
    assert x.shape == (1797, 64) and x.dtype == jnp.float32
    assert y.shape == (1797,) and y.dtype == jnp.int32
    xn = np.asarray(x)
    assert xn.min() == 0.0 and xn.max() == 1.0
    np.testing.assert_array_equal(xn * 16, np.round(xn * 16))  # pixel counts 0..16
    counts = np.bincount(np.asarray(y), minlength=10)
    assert counts.sum() == 1797 and len(counts) == 10
    assert counts.min() >= 174 and counts.max() <= 183
    # The first image of scikit-learn's set is a 0 whose top row is 0 0 5 13 9 1 0 0.
    assert int(y[0]) == 0
    np.testing.assert_array_equal(xn[0, :8] * 16, [0, 0, 5, 13, 9, 1, 0, 0])


def test_load_digits_unflattened_and_float64():
    x, _ = data.load_digits(flatten=False, dtype=jnp.float64)
    assert x.shape == (1797, 8, 8) and x.dtype == jnp.float64
    flat, _ = data.load_digits()
    np.testing.assert_array_equal(np.asarray(x).reshape(1797, 64), np.asarray(flat))


def test_float64_request_without_x64_gives_float32_quietly():
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error")
        x, y = data.load_digits(dtype=jnp.float64)
        xs, _ = data.make_moons(N, key=KEY, dtype=jnp.float64)
    assert x.dtype == jnp.float32 and y.dtype == jnp.int32 and xs.dtype == jnp.float32


def test_load_digits_rejects_integer_dtype():
    with pytest.raises(TypeError, match="dtype"):
        data.load_digits(dtype=jnp.int32)


# --------------------------------------------------------------------------- splits


def _indexed(n, classes=3):
    """x holds each sample's index, so rows can be traced through a split."""
    x = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 2))
    y = (np.arange(n) % classes).astype(np.int32)
    return x, y


def test_train_test_split_sizes_disjoint_aligned():
    x, y = _indexed(100)
    x_tr, x_te, y_tr, y_te = data.train_test_split(x, y, key=KEY)
    assert x_tr.shape == (70, 2) and x_te.shape == (30, 2)  # ceil(100 * 0.3) = 30
    ids_tr, ids_te = np.asarray(x_tr[:, 0]).astype(int), np.asarray(x_te[:, 0]).astype(int)
    assert set(ids_tr).isdisjoint(ids_te)
    assert sorted(np.concatenate([ids_tr, ids_te])) == list(range(100))
    np.testing.assert_array_equal(np.asarray(y_tr), ids_tr % 3)  # rows stay paired
    np.testing.assert_array_equal(np.asarray(y_te), ids_te % 3)


def test_train_test_split_size_rounding_and_int_count():
    x, y = _indexed(10)
    assert data.train_test_split(x, y, test_size=0.25, key=KEY)[1].shape[0] == 3  # ceil(2.5)
    assert data.train_test_split(x, y, test_size=4, key=KEY)[1].shape[0] == 4
    x, y = _indexed(100)
    # 0.15 * 100 is 15.000000000000002 in floating point; that is still 15 samples.
    assert data.train_test_split(x, y, test_size=0.15, key=KEY)[1].shape[0] == 15


def test_train_test_split_deterministic_in_key():
    x, y = _indexed(N)
    a = data.train_test_split(x, y, key=jax.random.key(3))
    b = data.train_test_split(x, y, key=jax.random.key(3))
    c = data.train_test_split(x, y, key=jax.random.key(4))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert not np.array_equal(np.asarray(a[1]), np.asarray(c[1]))
    # Raw uint32 keys work too.
    data.train_test_split(x, y, key=jax.random.PRNGKey(0))


def test_stratified_split_keeps_proportions_on_digits():
    x, y = data.load_digits()
    _, _, y_tr, y_te = data.train_test_split(x, y, test_size=0.3, key=KEY, stratify=True)
    n_c = np.bincount(np.asarray(y))
    te_c = np.bincount(np.asarray(y_te), minlength=10)
    assert te_c.sum() == 540  # ceil(1797 * 0.3)
    assert np.all(np.abs(te_c - n_c * 540 / 1797) < 1)  # each class within one sample
    np.testing.assert_array_equal(np.bincount(np.asarray(y_tr), minlength=10) + te_c, n_c)


def test_stratified_split_small_classes_by_hand():
    # Classes of 2, 3 and 5 samples, half to test: shares 1, 1.5, 2.5 -> floors
    # 1, 1, 2 (4 samples) and the fifth goes to class 1 or 2 (tie on the .5).
    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2], np.int32)
    x = np.arange(10.0)[:, None]
    for seed in range(5):
        _, _, _, y_te = data.train_test_split(x, y, test_size=0.5, key=jax.random.key(seed),
                                              stratify=True)
        c = np.bincount(np.asarray(y_te), minlength=3)
        assert list(c) in ([1, 2, 2], [1, 1, 3])


def test_train_val_test_split_sizes_and_stratification():
    x, y = _indexed(N, classes=4)
    parts = data.train_val_test_split(x, y, val_size=0.2, test_size=0.2, key=KEY, stratify=True)
    x_tr, x_va, x_te, y_tr, y_va, y_te = parts
    assert (x_tr.shape[0], x_va.shape[0], x_te.shape[0]) == (60, 20, 20)
    ids = [set(np.asarray(a[:, 0]).astype(int)) for a in (x_tr, x_va, x_te)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set.union(*ids) == set(range(N))
    # 25 per class: exactly 5 per class in val and in test, 15 in train.
    assert list(np.bincount(np.asarray(y_va))) == [5] * 4
    assert list(np.bincount(np.asarray(y_te))) == [5] * 4
    assert list(np.bincount(np.asarray(y_tr))) == [15] * 4
    np.testing.assert_array_equal(np.asarray(y_te), np.asarray(x_te[:, 0]).astype(int) % 4)


@pytest.mark.parametrize("bad", [0, 0.0, 1.0, 1.5, -0.2, 10, 11, True, "0.3", None])
def test_train_test_split_rejects_bad_test_size(bad):
    x, y = _indexed(10)
    with pytest.raises(ValueError, match="test_size"):
        data.train_test_split(x, y, test_size=bad, key=KEY)


def test_train_val_test_split_rejects_sizes_leaving_no_training_data():
    x, y = _indexed(10)
    with pytest.raises(ValueError, match="val_size=0.5 and test_size=0.5"):
        data.train_val_test_split(x, y, val_size=0.5, test_size=0.5, key=KEY)
    with pytest.raises(ValueError, match="val_size"):
        data.train_val_test_split(x, y, val_size=-1, key=KEY)


def test_split_input_errors_name_the_argument():
    x, y = _indexed(10)
    with pytest.raises(ValueError, match=r"x and y .*\(10, 2\).*\(9,\)"):
        data.train_test_split(x, y[:9], key=KEY)
    with pytest.raises(ValueError, match="x contains 2 NaN"):
        data.train_test_split(np.where(x == 3.0, np.nan, x), y, key=KEY)
    with pytest.raises(TypeError, match="key"):
        data.train_test_split(x, y, key=0)
    with pytest.raises(TypeError):
        data.train_test_split(x, y)  # key is required, keyword-only
    with pytest.raises(ValueError, match="stratify"):
        data.train_test_split(x, y.astype(np.float32), key=KEY, stratify=True)


# --------------------------------------------------------------------------- one_hot


def test_one_hot_by_hand():
    got = data.one_hot(jnp.array([2, 0, 1, 2]))
    expected = [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    np.testing.assert_array_equal(np.asarray(got), expected)
    assert got.dtype == jnp.float32
    wide = data.one_hot(jnp.array([1]), 4, dtype=jnp.float64)
    assert wide.dtype == jnp.float64 and np.asarray(wide).tolist() == [[0, 1, 0, 0]]


def test_one_hot_under_jit_needs_num_classes():
    f = jax.jit(lambda y: data.one_hot(y, 3))
    np.testing.assert_array_equal(np.asarray(f(jnp.array([1, 2]))), [[0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="num_classes is required"):
        jax.jit(data.one_hot)(jnp.array([1, 2]))


def test_one_hot_errors():
    with pytest.raises(TypeError, match="y must hold integer"):
        data.one_hot(jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"y must be 1-D.*\(2, 1\)"):
        data.one_hot(jnp.array([[0], [1]]))
    with pytest.raises(ValueError, match=r"y holds labels in \[0, 3\]"):
        data.one_hot(jnp.array([0, 3]), 3)
    with pytest.raises(ValueError, match="num_classes"):
        data.one_hot(jnp.array([0, 1]), 0)


# --------------------------------------------------------------------------- scaling


def test_standardize_fit_by_hand_with_constant_column():
    # Column 0: values 1, 3 -> mean 2, population std 1. Column 1: constant 5 ->
    # std 0, replaced by 1 so it is only centred.
    stats = data.standardize_fit(jnp.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(np.asarray(stats.mean), [2.0, 5.0])
    np.testing.assert_allclose(np.asarray(stats.std), [1.0, 1.0])
    out = data.standardize_apply(stats, jnp.array([[4.0, 7.0]]))
    np.testing.assert_allclose(np.asarray(out), [[2.0, 2.0]])


def test_standardize_fits_on_train_only():
    x_train = jnp.array([[0.0], [2.0], [4.0]])  # mean 2, std sqrt(8/3)
    x_test = jnp.array([[100.0], [102.0]])
    tr, te = data.standardize(x_train, x_test)
    s = math.sqrt(8 / 3)
    np.testing.assert_allclose(np.asarray(te), [[98 / s], [100 / s]], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(tr), [[-2 / s], [0.0], [2 / s]], rtol=1e-12)


def test_standardize_digits_zero_variance_pixels_stay_finite():
    x, y = data.load_digits()
    x_tr, x_te, _, _ = data.train_test_split(x, y, key=KEY)
    constant = np.asarray(jnp.std(x_tr, axis=0)) == 0
    assert constant.any()  # border pixels that are always blank
    tr, te = data.standardize(x_tr, x_te)
    assert bool(jnp.all(jnp.isfinite(tr))) and bool(jnp.all(jnp.isfinite(te)))
    assert tr.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(tr.std(0))[~constant], 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(tr.mean(0)), 0.0, atol=1e-5)


def test_standardize_apply_jit_agrees_and_checks_shape():
    stats = data.standardize_fit(jnp.arange(12.0).reshape(4, 3))
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(np.asarray(jax.jit(data.standardize_apply)(stats, x)),
                                  np.asarray(data.standardize_apply(stats, x)))
    with pytest.raises(ValueError, match=r"x has shape \(2, 2\).*\(3,\)"):
        data.standardize_apply(stats, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="x_train"):
        data.standardize_fit(jnp.ones((0, 3)))
    with pytest.raises(ValueError, match="x_train contains"):
        data.standardize_fit(jnp.array([[1.0], [jnp.inf]]))


def test_standardize_fit_integer_input_gives_float32():
    stats = data.standardize_fit(np.array([[0], [16]], np.uint8))
    assert stats.mean.dtype == jnp.float32 and float(stats.std[0]) == 8.0


# --------------------------------------------------------------------------- minibatches


def test_minibatches_sizes_order_and_drop_last():
    x, y = _indexed(10)
    sizes = [xb.shape[0] for xb, _ in data.minibatches(x, y, batch_size=4)]
    assert sizes == [4, 4, 2]
    assert [xb.shape[0] for xb, _ in data.minibatches(x, y, batch_size=4, drop_last=True)] == [4, 4]
    first = next(iter(data.minibatches(x, y, batch_size=4)))[0]
    np.testing.assert_array_equal(np.asarray(first[:, 0]), [0, 1, 2, 3])  # no key: in order


def test_minibatches_shuffled_covers_each_sample_once():
    x, y = _indexed(10)
    batches = list(data.minibatches(x, y, batch_size=3, key=KEY))
    ids = np.concatenate([np.asarray(xb[:, 0]) for xb, _ in batches]).astype(int)
    assert sorted(ids) == list(range(10)) and list(ids) != list(range(10))
    for xb, yb in batches:
        np.testing.assert_array_equal(np.asarray(yb), np.asarray(xb[:, 0]).astype(int) % 3)
    again = np.concatenate([np.asarray(xb[:, 0]) for xb, _ in
                            data.minibatches(x, y, batch_size=3, key=KEY)]).astype(int)
    np.testing.assert_array_equal(ids, again)


@pytest.mark.parametrize("bad", [0, -1, 11, 2.5, True])
def test_minibatches_rejects_bad_batch_size_before_iterating(bad):
    x, y = _indexed(10)
    with pytest.raises(ValueError, match="batch_size"):
        data.minibatches(x, y, batch_size=bad)  # raised at call time, not at next()


def test_check_xy_and_check_batch_size_messages():
    assert data.check_xy(np.ones((3, 2)), np.ones(3)) == 3
    with pytest.raises(ValueError, match="inputs is empty"):
        data.check_xy(np.ones((0, 2)), np.ones(0), name_x="inputs")
    with pytest.raises(ValueError, match="y must be an array"):
        data.check_xy(np.ones((2, 2)), 1.0)
    with pytest.raises(ValueError, match=r"targets contains 1 NaN"):
        data.check_xy(np.ones((2, 2)), np.array([0.0, np.nan]), name_y="targets")
    with pytest.raises(ValueError, match=r"batch_size=11 .*\[1, 10\]"):
        data.check_batch_size(11, 10)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        data.check_batch_size(0, 10)


# --------------------------------------------------------------------------- generated sets


def test_two_lines_geometry_and_labels():
    x, y = data.make_two_lines(N, key=KEY)
    assert x.shape == (N, 2) and y.shape == (N, 1) and x.dtype == y.dtype == jnp.float32
    assert int(y.sum()) == N // 2  # balanced
    xn, yn = np.asarray(x, np.float64), np.asarray(y[:, 0]).astype(int)
    s = (xn[:, 1] - xn[:, 0]) / math.sqrt(2)  # signed distance to the diagonal
    np.testing.assert_array_equal(yn, (np.abs(s) < 0.5).astype(int))  # band = class 1
    assert np.all(np.abs(np.abs(s) - 0.5) >= 0.1 - 1e-6)  # the margin around both lines
    assert (s[yn == 0] > 0).any() and (s[yn == 0] < 0).any()  # class 0 on both sides
    _, yi = data.make_two_lines(N, key=KEY, labels="int")
    assert yi.shape == (N,) and yi.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(yi), yn)


def test_two_lines_separable_by_two_lines_not_by_one():
    x, y = data.make_two_lines(N, key=KEY)
    x, y = np.asarray(x, np.float64), np.asarray(y[:, 0], np.float64)
    # Two lines: a hand-set 2-2-1 ReLU network, one hidden unit per line.
    r = 1 / math.sqrt(2)
    W = np.array([[-r, r], [r, -r]])  # columns are hidden units: s and -s
    h = np.maximum(x @ W - 0.5, 0.0)  # distance beyond each line (0 inside the band)
    logit = 0.5 - 10.0 * h.sum(axis=1)
    assert np.mean((logit > 0) == (y == 1)) == 1.0
    # One line: the best logistic-regression line (a convex problem, so gradient
    # descent finds it) is far from 100%; the band plus one side, ~75%, is the most.
    xa = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    w = np.zeros(3)
    for _ in range(2000):
        z = xa @ w
        w -= 1.0 * xa.T @ (1 / (1 + np.exp(-z)) - y) / len(y)
    assert np.mean(((xa @ w) > 0) == (y == 1)) < 0.85
    # The least-squares line too.
    w_ls = np.linalg.lstsq(xa, 2 * y - 1, rcond=None)[0]
    assert np.mean(((xa @ w_ls) > 0) == (y == 1)) < 0.85


def test_xor_corners_and_labels():
    x, y = data.make_xor(8, key=KEY, noise=0.0, labels="int")
    xn = np.asarray(x)
    assert set(map(tuple, xn.tolist())) == {(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)}
    np.testing.assert_array_equal(np.asarray(y), (xn[:, 0] * xn[:, 1] < 0).astype(int))
    assert np.bincount(np.asarray(y)).tolist() == [4, 4]
    xf, yf = data.make_xor(N, key=KEY)
    assert xf.shape == (N, 2) and yf.shape == (N, 1) and yf.dtype == jnp.float32


def test_sine_noise_free_and_range():
    x, y = data.make_sine(N, key=KEY, noise=0.0, x_range=(0.0, 1.0), dtype=jnp.float64)
    assert x.shape == y.shape == (N, 1) and x.dtype == jnp.float64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    np.testing.assert_allclose(np.asarray(y), np.sin(np.asarray(x)), rtol=1e-12)
    with pytest.raises(ValueError, match="x_range"):
        data.make_sine(5, key=KEY, x_range=(1.0, 0.0))


def test_moons_and_spirals_shapes_and_counts():
    x, y = data.make_moons(N, key=KEY, noise=0.0)
    assert x.shape == (N, 2) and y.shape == (N,) and y.dtype == jnp.int32
    assert np.bincount(np.asarray(y)).tolist() == [50, 50]
    xn, yn = np.asarray(x, np.float64), np.asarray(y)
    np.testing.assert_allclose(np.hypot(*xn[yn == 0].T), 1.0, rtol=1e-6)  # unit circle
    np.testing.assert_allclose(np.hypot(xn[yn == 1, 0] - 1, xn[yn == 1, 1] - 0.5), 1.0, rtol=1e-6)
    x, y = data.make_spirals(N, key=KEY, classes=3)
    assert x.shape == (100, 2) and np.bincount(np.asarray(y)).tolist() == [34, 33, 33]
    x0, _ = data.make_spirals(N, key=KEY, noise=0.0)
    radius = np.hypot(*np.asarray(x0, np.float64).T)
    assert radius.min() >= 0.1 - 1e-6 and radius.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("make", [data.make_two_lines, data.make_xor, data.make_sine,
                                  data.make_moons, data.make_spirals])
def test_generators_deterministic_and_validated(make):
    a, b = make(N, key=jax.random.key(5)), make(N, key=jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(make(N, key=jax.random.key(6))[0]))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        make(0, key=KEY)
    with pytest.raises(ValueError, match="noise"):
        make(5, key=KEY, noise=-0.1)
    with pytest.raises(TypeError, match="key"):
        make(5, key=42)
    with pytest.raises(TypeError, match="dtype"):
        make(5, key=KEY, dtype=jnp.int32)


def test_labels_option_is_checked():
    with pytest.raises(ValueError, match="labels='integer'.*Did you mean 'int'"):
        data.make_two_lines(5, key=KEY, labels="integer")
    with pytest.raises(ValueError, match="classes"):
        data.make_spirals(5, key=KEY, classes=0)


# --------------------------------------------------------------------------- IDX / MNIST


def _idx(arr: np.ndarray, code: int) -> bytes:
    """IDX bytes written by hand: 0, 0, type byte, ndim, big-endian dims, big-endian data."""
    be = arr.dtype.newbyteorder(">")
    return (struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
            + arr.astype(be).tobytes())


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("arr, code", [
    (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
    (np.array([[1.5, -2.25], [3.0, 1e-3]], np.float32), 0x0D),
    (np.array([-300, 7, 32000], np.int16), 0x0B),
    (np.array([-1, 2], np.int8), 0x09),
    (np.array([2**31 - 1, -5], np.int32), 0x0C),
    (np.array([math.pi, -1e300], np.float64), 0x0E),
])
def test_idx_round_trip(tmp_path, arr, code, gz):
    raw = _idx(arr, code)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    got = data.load_idx(path)
    assert got.dtype == arr.dtype and got.shape == arr.shape and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_idx_gzip_detected_by_magic_not_name(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    path = tmp_path / "plain-name"
    path.write_bytes(gzip.compress(_idx(arr, 0x08)))
    np.testing.assert_array_equal(data.load_idx(str(path)), arr)


def test_idx_truncated_and_malformed(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx(arr, 0x08)  # 4 + 3*4 header bytes + 24 data bytes = 40
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(raw[:-3])
    with pytest.raises(ValueError, match=r"short-idx3-ubyte.*truncated.*40 bytes expected.*37"):
        data.load_idx(path)
    path.write_bytes(raw + b"\x00")
    with pytest.raises(ValueError, match="longer than its header"):
        data.load_idx(path)
    path.write_bytes(raw[:10])  # inside the dims
    with pytest.raises(ValueError, match="truncated"):
        data.load_idx(path)
    path.write_bytes(b"\x01" + raw[1:])
    with pytest.raises(ValueError, match="not an IDX file"):
        data.load_idx(path)
    path.write_bytes(raw[:2] + b"\x0a" + raw[3:])
    with pytest.raises(ValueError, match="type byte 0x0a"):
        data.load_idx(path)
    path.write_bytes(gzip.compress(raw)[:-8])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load_idx(path)
    with pytest.raises(FileNotFoundError):
        data.load_idx(tmp_path / "nope")


def _write_mnist(directory, n_train=5, n_test=3, gz=("train-labels-idx1-ubyte",)):
    rng = np.random.default_rng(0)  # test fixture data only; the library never seeds
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        raw = _idx(arr, 0x08)
        if name in gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return arrays


def test_load_mnist_reads_plain_and_gz(tmp_path):
    arrays = _write_mnist(tmp_path)
    x_tr, y_tr, x_te, y_te = data.load_mnist(tmp_path)
    assert x_tr.shape == (5, 16) and x_te.shape == (3, 16) and x_tr.dtype == jnp.float32
    assert y_tr.dtype == jnp.int32 and y_te.shape == (3,)
    np.testing.assert_allclose(np.asarray(x_tr),
                               arrays["train-images-idx3-ubyte"].reshape(5, 16) / 255, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(y_tr), arrays["train-labels-idx1-ubyte"])
    x3, *_ = data.load_mnist(str(tmp_path), flatten=False, dtype=jnp.float64)
    assert x3.shape == (5, 4, 4) and x3.dtype == jnp.float64


def test_load_mnist_names_every_missing_file(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(np.zeros((1, 2, 2), np.uint8), 8))
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "3 of the 4" in msg
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert "train-images-idx3-ubyte" not in msg
    with pytest.raises(FileNotFoundError, match="4 of the 4"):
        data.load_mnist(tmp_path / "absent")


def test_load_mnist_count_mismatch(tmp_path):
    _write_mnist(tmp_path, gz=())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(2, np.uint8), 8))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*one label per image \[3\]"):
        data.load_mnist(tmp_path)


# --------------------------------------------------------------------------- CSV


def test_load_csv_reads_features_and_int_target(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a, label ,b\n1,0,2\n\n3.5,1,-1e-3\n", encoding="utf-8-sig")
    x, y = data.load_csv(path, target="label")
    np.testing.assert_allclose(np.asarray(x), [[1.0, 2.0], [3.5, -1e-3]], rtol=1e-6)
    assert x.dtype == jnp.float32 and y.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(y), [0, 1])


def test_load_csv_float_target_and_delimiter(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x;y\n1;0.5\n2;1\n")
    x, y = data.load_csv(str(path), target="y", delimiter=";", dtype=jnp.float64)
    assert x.shape == (2, 1) and y.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(y), [0.5, 1.0])


@pytest.mark.parametrize("text, target, pattern", [
    ("a,b\n1,2\n", "lable", r"target='lable' is not a column.*\['a', 'b'\]"),
    ("a,label\n1,0\n2,x\n", "label", r"line 3, column 'label': 'x' is not a finite number"),
    ("a,label\n1,0\n,1\n", "label", r"line 3, column 'a'"),
    ("a,label\nnan,0\n", "label", r"line 2, column 'a': 'nan'"),
    ("a,label\n1,0\n1,2,3\n", "label", r"line 3: 3 cells, but the header has 2"),
    ("a,label\n", "label", "no data rows"),
    ("", "label", "empty"),
    ("label\n1\n", "label", "feature column"),
    ("a,a,label\n1,2,3\n", "label", "duplicate"),
])
def test_load_csv_errors(tmp_path, text, target, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern) as info:
        data.load_csv(path, target=target)
    assert "bad.csv" in str(info.value)


def test_augment_shifts_moves_pixels_with_zero_fill():
    im = np.arange(1, 10, dtype=np.float32).reshape(1, 9)  # one 3x3 image 1..9
    xa, ya = data.augment_shifts(im, np.array([4]), image_shape=(3, 3))
    assert xa.shape == (5, 9) and list(np.asarray(ya)) == [4] * 5
    right = np.asarray(xa[1]).reshape(3, 3)  # shift (0, 1): columns move right, first column zero
    np.testing.assert_array_equal(right, [[0, 1, 2], [0, 4, 5], [0, 7, 8]])
    up = np.asarray(xa[4]).reshape(3, 3)  # shift (-1, 0): rows move up, last row zero
    np.testing.assert_array_equal(up, [[4, 5, 6], [7, 8, 9], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"image_shape=\(8, 8\) needs 64"):
        data.augment_shifts(im, np.array([4]))


def test_split_permutations_are_the_eager_draws():
    """The one compiled program of a split draws exactly what the eager split and permutations drew
    (splits of existing runs, which resume and evaluate re-create, must not change)."""
    from funcnn.data.loaders import _permutations

    key = jax.random.key(3)
    k_perm, k_ties = jax.random.split(key)
    perm, ties = _permutations(key, 97, 10)
    np.testing.assert_array_equal(perm, jax.random.permutation(k_perm, 97))
    np.testing.assert_array_equal(ties, jax.random.permutation(k_ties, 10))
