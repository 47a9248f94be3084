"""Data: the bundled digits set, splits, scaling, batching, generated sets, file readers.

``funcnn.data.X`` is the one public spelling of every name here. The package
holds ``loaders`` (the bundled digits set, splits, standardisation, batches,
shifts), ``generated`` (the generated teaching sets) and ``readers`` (IDX/MNIST
and CSV files); the old module paths ``funcnn.datasets`` and ``funcnn.readers``
still work.

Conventions:
  * Arrays are ``[n, ...]``: the first axis indexes samples everywhere.
  * Float outputs are float32 unless a ``dtype=`` keyword says otherwise
    (float64 needs ``jax_enable_x64``; without it float32 is returned).
  * Randomness comes only from a keyword-only ``key`` (a ``jax.random.key``);
    the same key always gives the same split, shuffle or data set.
  * Functions here run eagerly on concrete data and validate it before doing
    any work; only ``standardize_apply`` and ``one_hot`` (given
    ``num_classes``) are meant to be called inside ``jit`` as well.
"""
from funcnn.data.generated import make_moons, make_sine, make_spirals, make_two_lines, make_xor
from funcnn.data.loaders import (
    Standardizer,
    augment_shifts,
    check_batch_size,
    check_xy,
    load_digits,
    minibatches,
    one_hot,
    standardize,
    standardize_apply,
    standardize_fit,
    train_test_split,
    train_val_test_split,
)
from funcnn.data.readers import MNIST_FILES, load_csv, load_csv_features, load_idx, load_mnist

__all__ = [
    "load_digits", "train_test_split", "train_val_test_split", "one_hot",
    "Standardizer", "standardize_fit", "standardize_apply", "standardize",
    "minibatches", "check_xy", "check_batch_size", "augment_shifts",
    "make_two_lines", "make_xor", "make_sine", "make_moons", "make_spirals",
    "load_idx", "load_mnist", "load_csv", "load_csv_features", "MNIST_FILES",
]
