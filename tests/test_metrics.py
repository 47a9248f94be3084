"""Tests for funcnn.metrics: hand-counted cases, edge cases, jit against eager.

The running example (3 classes, 9 samples):

    y_true = 0 0 0 1 1 2 2 2 2
    y_pred = 0 1 0 1 2 2 2 0 1

counted by hand, rows = true class, columns = predicted class:

    true 0 -> predicted 0, 1, 0     -> [2, 1, 0]
    true 1 -> predicted 1, 2        -> [0, 1, 1]
    true 2 -> predicted 2, 2, 0, 1  -> [1, 1, 2]

column sums (predicted) 3 3 3, row sums (support) 3 2 4, diagonal (tp) 2 1 2:
precision = 2/3 1/3 2/3; recall = 2/3 1/2 2/4; F1 = 2tp/(pred + true) = 4/6 2/5 4/7;
accuracy = 5/9.
"""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnn import metrics

Y_TRUE = jnp.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = jnp.array([0, 1, 0, 1, 2, 2, 2, 0, 1])
CM = [[2, 1, 0], [0, 1, 1], [1, 1, 2]]
PRECISION = [2 / 3, 1 / 3, 2 / 3]
RECALL = [2 / 3, 1 / 2, 2 / 4]
F1 = [4 / 6, 2 / 5, 4 / 7]


class HandCountedTest(chex.TestCase):
    """Each metric on the running example, traced under jit and run eagerly."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_confusion_matrix(self):
        f = functools.partial(metrics.confusion_matrix, num_classes=3)
        cm = self.variant(f)(Y_TRUE, Y_PRED)
        assert cm.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(cm), CM)

    @chex.variants(with_jit=True, without_jit=True)
    def test_accuracy(self):
        acc = self.variant(metrics.accuracy)(Y_TRUE, Y_PRED)
        assert acc.dtype == jnp.float32 and acc.shape == ()
        np.testing.assert_allclose(float(acc), 5 / 9, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_precision_recall_f1(self):
        f = functools.partial(metrics.precision_recall_f1, num_classes=3, dtype=jnp.float64)
        p, r, f1 = self.variant(f)(Y_TRUE, Y_PRED)
        np.testing.assert_allclose(np.asarray(p), PRECISION, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(r), RECALL, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(f1), F1, rtol=1e-12)
        # F1 is the harmonic mean of precision and recall.
        hm = [2 * a * b / (a + b) for a, b in zip(PRECISION, RECALL)]
        np.testing.assert_allclose(np.asarray(f1), hm, rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_classification_report(self):
        f = functools.partial(metrics.classification_report, num_classes=3)
        rep = self.variant(f)(Y_TRUE, Y_PRED)
        np.testing.assert_array_equal(np.asarray(rep["support"]), [3, 2, 4])
        np.testing.assert_array_equal(np.asarray(rep["confusion_matrix"]), CM)
        np.testing.assert_allclose(float(rep["accuracy"]), 5 / 9, rtol=1e-6)
        np.testing.assert_allclose(float(rep["macro_precision"]), sum(PRECISION) / 3, rtol=1e-6)
        np.testing.assert_allclose(float(rep["macro_recall"]), sum(RECALL) / 3, rtol=1e-6)
        np.testing.assert_allclose(float(rep["macro_f1"]), sum(F1) / 3, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(rep["f1"]), F1, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_regression(self):
        # y_true 1 2 3, y_pred 1 3 5: squared errors 0 1 4 -> mse 5/3. Mean of
        # y_true is 2, so SS_tot = 1 + 0 + 1 = 2 and R2 = 1 - 5/2 = -1.5.
        t, p = jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 3.0, 5.0])
        np.testing.assert_allclose(float(self.variant(metrics.mse)(t, p)), 5 / 3, rtol=1e-12)
        np.testing.assert_allclose(float(self.variant(metrics.rmse)(t, p)), math.sqrt(5 / 3),
                                   rtol=1e-12)
        np.testing.assert_allclose(float(self.variant(metrics.r2_score)(t, p)), -1.5, rtol=1e-12)


def test_never_predicted_class_has_zero_precision_and_f1():
    # Class 2 is never predicted: precision 0/0 -> 0, recall 0/2 = 0, F1 0.
    # Class 1: tp 1, predicted 3 times, 1 true sample -> precision 1/3, recall 1.
    p, r, f1 = metrics.precision_recall_f1(jnp.array([0, 1, 2, 2]), jnp.array([0, 1, 1, 1]), 3)
    np.testing.assert_allclose(np.asarray(p), [1, 1 / 3, 0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r), [1, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(f1), [1, 0.5, 0], rtol=1e-6)  # 2*1/(3+1)
    assert bool(jnp.all(jnp.isfinite(p)))


def test_absent_class_is_zero_and_left_out_of_macro():
    t, p = jnp.array([0, 1, 1]), jnp.array([0, 1, 0])
    # Per class (C=2): f1_0 = 2*1/(2+1) = 2/3, f1_1 = 2*1/(1+2) = 2/3.
    np.testing.assert_allclose(float(metrics.macro_f1(t, p, 2)), 2 / 3, rtol=1e-6)
    # A third, unused class slot gets 0 everywhere but does not lower the macro mean.
    _, _, f1 = metrics.precision_recall_f1(t, p, 3)
    assert float(f1[2]) == 0.0
    np.testing.assert_allclose(float(metrics.macro_f1(t, p, 3)), 2 / 3, rtol=1e-6)


def test_perfect_predictions_score_one():
    y = jnp.array([2, 0, 1, 1, 0])
    rep = metrics.classification_report(y, y, 3)
    for k in ("precision", "recall", "f1"):
        np.testing.assert_array_equal(np.asarray(rep[k]), [1.0, 1.0, 1.0])
    for k in ("macro_precision", "macro_recall", "macro_f1", "accuracy"):
        assert float(rep[k]) == 1.0
    x = jnp.array([[0.5, 1.0], [2.0, -3.0]])
    assert float(metrics.r2_score(x, x)) == 1.0 and float(metrics.mse(x, x)) == 0.0


def test_scores_are_argmaxed():
    probs = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]])
    y = jnp.array([0, 1, 1, 0])  # predictions 0 1 2 0: three right
    assert float(metrics.accuracy(y, probs)) == 0.75
    onehot = jax.nn.one_hot(y, 3)
    assert float(metrics.accuracy(onehot, probs)) == 0.75
    # A sigmoid output thresholded to bool counts as 0/1 labels.
    assert float(metrics.accuracy(y.astype(bool), probs[:, 1] > 0.5)) == 0.75
    np.testing.assert_array_equal(np.asarray(metrics.confusion_matrix(y, probs, 3)),
                                  [[2, 0, 0], [0, 1, 1], [0, 0, 0]])


def test_out_of_range_labels_raise_eagerly_and_are_dropped_under_jit():
    with pytest.raises(ValueError, match=r"y_true holds labels in \[0, 3\].*\[0, 3\)"):
        metrics.confusion_matrix(jnp.array([0, 3]), jnp.array([0, 1]), 3)
    with pytest.raises(ValueError, match="y_pred holds labels"):
        metrics.confusion_matrix(jnp.array([0, 1]), jnp.array([-1, 1]), 3)
    cm = jax.jit(metrics.confusion_matrix, static_argnums=2)(jnp.array([0, 3, 1]),
                                                              jnp.array([0, 1, -1]), 3)
    np.testing.assert_array_equal(np.asarray(cm), [[1, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_classification_input_errors():
    y = jnp.array([0, 1])
    with pytest.raises(ValueError, match=r"y_pred has one column.*Threshold"):
        metrics.accuracy(y, jnp.array([[0.2], [0.9]]))
    with pytest.raises(TypeError, match="y_pred as labels"):
        metrics.accuracy(y, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"same number of samples; got 2 and 3"):
        metrics.accuracy(y, jnp.array([0, 1, 1]))
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy(jnp.zeros(0, jnp.int32), jnp.zeros(0, jnp.int32))
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        metrics.confusion_matrix(y, y, 0)
    with pytest.raises(ValueError, match=r"y_pred has 2 score columns .* num_classes=3"):
        metrics.confusion_matrix(y, jnp.ones((2, 2)), 3)
    with pytest.raises(ValueError, match=r"y_true must be integer labels \[n\] or scores"):
        metrics.accuracy(jnp.zeros((2, 2, 2)), y)
    with pytest.raises(TypeError, match="dtype"):
        metrics.accuracy(y, y, dtype=jnp.int32)


def test_regression_multi_output_and_constant_target():
    # Column 0 is the running example (R2 -1.5, squared errors 0 1 4); column 1
    # is predicted exactly (R2 1). Uniform average: R2 = -0.25, mse = 5/6.
    t = jnp.array([[1.0, 4.0], [2.0, 5.0], [3.0, 7.0]])
    p = jnp.array([[1.0, 4.0], [3.0, 5.0], [5.0, 7.0]])
    np.testing.assert_allclose(float(metrics.r2_score(t, p)), -0.25, rtol=1e-12)
    np.testing.assert_allclose(float(metrics.mse(t, p)), 5 / 6, rtol=1e-12)
    # A constant target: 1 if predicted exactly, 0 otherwise (no 0/0).
    c = jnp.array([2.0, 2.0, 2.0])
    assert float(metrics.r2_score(c, c)) == 1.0
    assert float(metrics.r2_score(c, jnp.array([2.0, 2.0, 3.0]))) == 0.0


def test_regression_dtypes_and_errors():
    assert metrics.mse(jnp.array([1, 2]), jnp.array([1, 4])).dtype == jnp.float32  # ints
    assert float(metrics.mse(jnp.array([1, 2]), jnp.array([1, 4]))) == 2.0
    assert metrics.mse(jnp.ones(2, jnp.float32), jnp.ones(2, jnp.float32)).dtype == jnp.float32
    assert metrics.rmse(jnp.ones(2), jnp.zeros(2)).dtype == jnp.float64
    with pytest.raises(ValueError, match=r"same shape; got \(3,\) and \(3, 1\)"):
        metrics.mse(jnp.ones(3), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="y_pred contains 1 NaN"):
        metrics.r2_score(jnp.ones(3), jnp.array([1.0, jnp.nan, 1.0]))
    with pytest.raises(ValueError, match="non-empty"):
        metrics.mse(jnp.ones(0), jnp.ones(0))


def test_metrics_with_x64_off_return_float32():
    with jax.enable_x64(False):
        y = jnp.array([0, 1, 1])
        assert metrics.accuracy(y, y).dtype == jnp.float32
        assert metrics.macro_f1(y, y, 2, dtype=jnp.float64).dtype == jnp.float32
        assert metrics.r2_score(jnp.array([1.0, 2.0]), jnp.array([1.0, 2.5])).dtype == jnp.float32
