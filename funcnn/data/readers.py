"""File readers (IDX/MNIST and CSV); re-exported by ``funcnn.data``.

Readers only read the path they are given, never download, and never unpickle.
Every format error names the file and says what was expected and what was found.
"""
from __future__ import annotations

import csv
import difflib
import gzip
import math
import os
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from funcnn import _checks
from funcnn.errors import InvalidArgument, InvalidType
from funcnn.typing import Array

__all__ = ["load_idx", "load_mnist", "load_csv", "load_csv_features", "MNIST_FILES"]

# IDX type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# The four standard MNIST names, in the order load_mnist returns their arrays'
# roles; each may also be present with a ".gz" suffix.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    # Decide on the magic bytes, not the name: a renamed or double-gzipped-named
    # file is still read correctly (an IDX header always starts with 0x00 0x00).
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise InvalidArgument(f"{os.fspath(path)!r} starts like a gzip file but cannot be "
                         f"decompressed ({e}); the file is probably truncated or corrupt.") from e


def load_idx(path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), raw or gzip-compressed.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of
    dimensions d, d big-endian uint32 sizes, then the values big-endian in C
    order. Compression is detected from the gzip magic bytes, so ``.gz`` and
    plain files may be named either way.

    Args:
      path: a ``str`` or ``os.PathLike`` to the file.

    Returns:
      A NumPy array (writable, native byte order) with the file's shape and
      element type, e.g. uint8 ``[60000, 28, 28]`` for MNIST training images.
      NumPy rather than JAX, so float64 and int16 files keep their type whatever
      ``jax_enable_x64`` says; ``load_mnist`` converts.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: not an IDX file (bad magic number or type byte), or its length
        disagrees with its header (names the expected and actual byte counts).
    """
    name = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise InvalidArgument(f"{name!r} is too short to be an IDX file: {len(data)} bytes, "
                         f"the header alone needs at least 4.")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise InvalidArgument(f"{name!r} is not an IDX file: its magic number starts with bytes "
                         f"{zero0:#04x} {zero1:#04x}, expected 0x00 0x00.")
    if code not in _IDX_DTYPES:
        allowed = ", ".join(f"{c:#04x} ({d.str[1:]})" for c, d in _IDX_DTYPES.items())
        raise InvalidArgument(f"{name!r} has IDX type byte {code:#04x}; allowed are {allowed}.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InvalidArgument(f"{name!r} is truncated: its header declares {ndim} dimensions, "
                         f"needing {header} header bytes, but the file has {len(data)} bytes.")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise InvalidArgument(
            f"{name!r} is {what}: header says shape {shape} of {dtype.str[1:]}, so "
            f"{expected} bytes expected (after decompression), but it has {len(data)}.")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a native-order, writable copy


def load_mnist(directory, *, dtype=jnp.float32, flatten: bool = True
               ) -> tuple[Array, Array, Array, Array]:
    """Loads MNIST (or Fashion-MNIST) from the four standard IDX files in ``directory``.

    Looks for ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each either plain
    or with a ``.gz`` suffix (plain preferred when both exist). Nothing is
    downloaded.

    Args:
      directory: ``str`` or ``os.PathLike`` holding the four files.
      dtype: floating dtype of the images.
      flatten: if True images are ``[n, rows*cols]``, else ``[n, rows, cols]``.

    Returns:
      ``(x_train, y_train, x_test, y_test)``: images in ``dtype`` scaled to
      [0, 1] (pixel / 255), ``[60000, 784]`` and ``[10000, 784]`` for MNIST;
      labels int32 ``[n]``.

    Raises:
      FileNotFoundError: any file missing; the message names every missing
        file and the directory.
      ValueError: a malformed file (see ``load_idx``), images not uint8
        ``[n, rows, cols]``, labels not ``[n]``, or counts that disagree.
      TypeError: ``dtype`` not floating.
    """
    dtype = _checks.float_dtype(dtype)
    directory = os.fspath(directory)
    found: list[str] = []
    missing: list[str] = []
    for base in MNIST_FILES:
        candidates = [os.path.join(directory, base + ext) for ext in ("", ".gz")]
        hit = next((c for c in candidates if os.path.isfile(c)), None)
        (found if hit else missing).append(hit or base)
    if missing:
        listed = ", ".join(f"{m} (or {m}.gz)" for m in missing)
        raise FileNotFoundError(
            f"load_mnist: {len(missing)} of the 4 MNIST files missing in directory "
            f"{directory!r}: {listed}. Put the standard IDX files there (plain or gzipped).")
    out = []
    for images_path, labels_path in ((found[0], found[1]), (found[2], found[3])):
        images, labels = load_idx(images_path), load_idx(labels_path)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise InvalidArgument(f"{images_path!r} must hold uint8 images [n, rows, cols]; "
                             f"got {images.dtype} {images.shape}.")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise InvalidArgument(f"{labels_path!r} must hold one label per image "
                             f"[{images.shape[0]}]; got shape {labels.shape}.")
        if flatten:
            images = images.reshape(images.shape[0], -1)
        out += [jax.device_put(images.astype(dtype) / dtype.type(255)),
                jax.device_put(labels.astype(np.int32))]
    return tuple(out)


def _read_table(path, delimiter: str) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    """``(name, column names, [(line number, cells), ...])`` of a CSV with a header row.

    Every funcnn CSV reader decides the header the same way: the first
    non-blank row names the columns, and a first row of numbers only is
    refused (it is data, and taking it as a header would drop it silently).
    """
    name = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(line, r) for line, r in enumerate(csv.reader(f, delimiter=delimiter), start=1)
                    if any(cell.strip() for cell in r)]
    except UnicodeDecodeError as e:
        raise InvalidArgument(f"{name!r} is not UTF-8 text (undecodable byte at offset {e.start}); "
                              "save it as a UTF-8 CSV.") from None
    except csv.Error as e:
        raise InvalidArgument(f"{name!r} is not a readable CSV file ({e}).") from None
    if not rows:
        raise InvalidArgument(f"{name!r} is empty; a header row naming the columns is required.")
    header_line, header = rows[0]
    columns = [c.strip() for c in header]
    if all(_is_number(c) for c in columns):
        raise InvalidArgument(f"{name!r}: its first row (line {header_line}) is all numbers, so it has no "
                              "header; add a first row naming the columns (e.g. x0,x1,...). A numeric first "
                              "row is never taken as a header, which would drop it.")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise InvalidArgument(f"{name!r}: duplicate column name(s) {duplicates} in the header "
                         f"(line {header_line}).")
    if len(rows) < 2:
        raise InvalidArgument(f"{name!r} has a header but no data rows.")
    return name, columns, rows[1:]


_NAME = re.compile(r"[A-Za-z0-9_. +\-]{1,32}")


def _shown(cells: list[str]) -> str:
    """Cells as an error may quote them: short plain names only, never a file's other contents.

    A file that is not a CSV at all (e.g. a password file) must not have its
    first line printed in an error.
    """
    return "[" + ", ".join(repr(c) if _NAME.fullmatch(c.strip()) else "<not shown>" for c in cells) + "]"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_cells(name: str, columns: list[str], rows, hints=None) -> tuple[np.ndarray, list[bool]]:
    """``([n, columns] float64 values, whether each column is all integer literals)``.

    ``hints``: column index -> a sentence added to the error for a non-number in that column.
    """
    values = np.empty((len(rows), len(columns)), np.float64)
    is_int = [True] * len(columns)
    for i, (line, row) in enumerate(rows):
        if len(row) != len(columns):
            raise InvalidArgument(f"{name!r}, line {line}: {len(row)} cells, but the header has "
                             f"{len(columns)} columns.")
        for j, cell in enumerate(row):
            text = cell.strip()
            try:
                v = float(text)
            except ValueError:
                v = float("nan")
            if not math.isfinite(v):
                raise InvalidArgument(f"{name!r}, line {line}, column {_shown([columns[j]])[1:-1]}: "
                                      f"{_shown([cell])[1:-1]} is not a finite number; every cell must be numeric."
                                      + (hints or {}).get(j, ""))
            values[i, j] = v
            if is_int[j]:
                try:
                    int(text)
                except ValueError:
                    is_int[j] = False
    return values, is_int


def load_csv_features(path, *, dtype=jnp.float32, delimiter: str = ",") -> Array:
    """Reads a numeric CSV file with a header row into ``[n, d]`` features (every column).

    The header is decided as in ``load_csv``: required, and a first row of
    numbers only is refused rather than dropped.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: as ``load_csv`` (no header, bad cells, not UTF-8).
    """
    dtype = _checks.float_dtype(dtype)
    name, columns, rows = _read_table(path, delimiter)
    values, _ = _parse_cells(name, columns, rows)
    return jax.device_put(values.astype(dtype))


def load_csv(path, *, target, dtype=jnp.float32, delimiter: str = ",", return_classes: bool = False):
    """Reads a CSV file with a header row into features and a target.

    Every column other than the target(s) becomes a feature, in file order.
    Blank lines are skipped; a UTF-8 byte-order mark is ignored. The header
    is required, and a first row of numbers only is refused, never dropped.

    One target column: it is int32 when every one of its cells is an integer
    literal (``0``, ``2``, ``-1``; not ``1.0``), so class labels come out ready
    for ``one_hot`` and the metrics; otherwise float in ``dtype``. With
    ``return_classes=True`` a target that is not all numbers (string labels:
    ``cat``, ``dog``) is read as class labels: ``classes`` is the sorted list
    of its distinct values and ``y[i]`` is the index of row i's label in it.
    Several target columns (a list of names) give float ``[n, k]`` targets.

    Args:
      path: ``str`` or ``os.PathLike`` to the file.
      target: the target column's name, or a list of names (surrounding spaces ignored).
      dtype: floating dtype of the features (and of a float target).
      delimiter: the one-character field separator.
      return_classes: also return ``classes`` (None for a numeric target),
        and accept non-numeric labels.

    Returns:
      ``(x, y)``, or ``(x, y, classes)`` with ``return_classes``: ``x``
      ``[n, d]`` in ``dtype``; ``y`` ``[n]`` int32 or ``dtype``, or ``[n, k]``
      in ``dtype`` for k target columns.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: empty file, no header, duplicate column names, unknown
        ``target`` (the message lists the columns), no feature columns, no
        data rows, a row with the wrong number of cells, or a cell that is not
        a finite number (the message names the line and column; a non-numeric
        label without ``return_classes`` too), a file that is not UTF-8.
      TypeError: ``dtype`` not floating, ``target`` not a name or list of names.
    """
    dtype = _checks.float_dtype(dtype)
    targets = [target] if isinstance(target, str) else list(target) if isinstance(target, (list, tuple)) else []
    if not targets or not all(isinstance(t, str) for t in targets):
        raise InvalidType(f"target must be a column name or a non-empty list of names; got {target!r}.")
    name, columns, rows = _read_table(path, delimiter)
    for t in targets:
        if t not in columns:
            close = difflib.get_close_matches(str(t), columns, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InvalidArgument(f"target={t!r} is not a column of {name!r}; its columns are "
                                  f"{_shown(columns)}.{hint}")
    if len(columns) <= len(targets):
        raise InvalidArgument(f"{name!r} has only the target column(s) {targets}; at least one "
                              "feature column is needed.")
    tcols = [columns.index(t) for t in targets]
    labels = return_classes and len(tcols) == 1 and not all(
        _is_number(row[tcols[0]]) for _, row in rows if len(row) == len(columns))
    texts = None
    if labels:  # parse the label column as text, the rest as numbers
        texts = [row[tcols[0]].strip() if len(row) == len(columns) else "" for _, row in rows]
        rows = [(line, ["0" if j == tcols[0] else c for j, c in enumerate(row)]) for line, row in rows]
    hints = {} if return_classes or len(tcols) > 1 else {
        tcols[0]: " A column of class names needs return_classes=True (the CLI does that)."}
    values, is_int = _parse_cells(name, columns, rows, hints)
    x = np.delete(values, tcols, axis=1).astype(dtype)
    classes = None
    if texts is not None:
        classes = sorted(set(texts))
        y = np.searchsorted(np.asarray(classes), np.asarray(texts)).astype(np.int32)
    elif len(tcols) > 1:
        y = values[:, tcols].astype(dtype)
    else:
        y = values[:, tcols[0]].astype(np.int32 if is_int[tcols[0]] else dtype)
    out = (jax.device_put(x), jax.device_put(y))
    return (*out, classes) if return_classes else out
