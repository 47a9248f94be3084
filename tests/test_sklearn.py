"""funcnn.sklearn: scikit-learn's own estimator checks, and what they do not cover."""
import csv
import importlib.util
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn")

from reference import compilations  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import funcnn  # noqa: E402
from funcnn import optim, train  # noqa: E402
from funcnn.sklearn import EXPECTED_FAILED_CHECKS, MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(), MLPRegressor()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the checks' tiny data and max_iter
        check(estimator)


def _blobs(n=120, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 4
    y = np.arange(n) % k
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float64), y


def test_string_labels_come_back_as_the_labels_given():
    x, y = _blobs()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = MLPClassifier(hidden_layer_sizes=(16,), random_state=0, max_iter=100).fit(x, names)
    assert est.classes_.tolist() == ["setosa", "versicolor", "virginica"]  # sorted
    pred = est.predict(x)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert np.mean(pred == names) > 0.95
    assert est.predict_proba(x).shape == (120, 3)
    np.testing.assert_allclose(np.exp(est.predict_log_proba(x)), est.predict_proba(x), rtol=1e-12)


def test_multilabel_uses_one_sigmoid_per_column():
    x, y = _blobs(k=3)
    Y = np.stack([y == 0, y >= 1, y == 2], axis=1).astype(int)  # rows with two labels too
    est = MLPClassifier(hidden_layer_sizes=(16,), random_state=0, max_iter=150).fit(x, Y)
    p = est.predict_proba(x)
    assert p.shape == (120, 3) and not np.allclose(p.sum(1), 1.0)  # not a softmax
    assert est.predict(x).shape == (120, 3)
    assert np.mean(est.predict(x) == Y) > 0.95


def test_multi_output_regression():
    x, Y = make_regression(n_samples=200, n_features=6, n_targets=3, noise=1.0, random_state=0)
    est = MLPRegressor(hidden_layer_sizes=(32,), random_state=0, max_iter=300,
                       learning_rate_init=1e-2).fit(x, Y / Y.std())
    assert est.predict(x).shape == (200, 3) and est.n_outputs_ == 3
    assert est.score(x, Y / Y.std()) > 0.9
    one = MLPRegressor(hidden_layer_sizes=(8,), random_state=0, max_iter=5).fit(x, Y[:, 0])
    assert one.predict(x).shape == (200,)


def test_defaults_are_accurate_on_digits():
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    assert MLPClassifier(random_state=0).fit(xtr, ytr).score(xte, yte) > 0.96


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_fit_is_train_fit_with_alpha_as_l2(dropout):
    # the estimator runs funcnn's compiled epoch, its alpha, learning rate and dropout rate
    # traced scalars: the same parameters as train.fit of the network built with them
    x, y = _blobs(n=50)
    est = MLPClassifier(hidden_layer_sizes=(7,), alpha=0.3, batch_size=16, max_iter=3, tol=0.0,
                        random_state=5, standardize=False, learning_rate_init=0.01, dropout=dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x, y)
    seed = np.random.RandomState(5).randint(np.iinfo(np.int32).max)
    net = funcnn.mlp([5, 7, 3], l2=0.3, dropout=dropout)
    state, _ = train.fit(net, optim.adam(0.01), (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)),
                         epochs=3, batch_size=16, key=jax.random.key(seed))
    for got, want in zip(est._params, jax.device_get(state.params), strict=True):
        np.testing.assert_allclose(got["W"], want["W"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_second_fit_with_same_shapes_compiles_nothing(early_stopping):
    x, y = _blobs(n=64)
    est = MLPClassifier(hidden_layer_sizes=(9,), max_iter=4, random_state=0, early_stopping=early_stopping,
                        validation_fraction=0.2, n_iter_no_change=100)
    fitted = lambda e, n=60: e.fit(x[:n], y[:n]).predict_proba(x[:n])  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted(est)
        with compilations() as compiles:
            for seed in range(3):  # grid-search refits: clones, new seeds, same shapes
                fitted(clone(est).set_params(random_state=seed))
            fitted(est.set_params(warm_start=True))
            # cross-validation folds of other sizes, in the bucket of 60 rows (57..64; with early
            # stopping 48 of them train: 41..48), padded to its size
            for n in (57, 59):
                fitted(clone(est), n)
    assert compiles == []


def test_a_grid_over_alpha_learning_rate_and_dropout_compiles_one_epoch():
    # alpha, learning_rate_init and a dropout rate are traced scalars of the compiled epoch:
    # after one fit, a grid search's refits with other values compile nothing and still
    # train with their own values (every fit ends with other parameters)
    x, y = _blobs(n=64)
    est = MLPClassifier(hidden_layer_sizes=(9,), max_iter=4, random_state=0, dropout=0.1)
    grid = [dict(alpha=a, learning_rate_init=lr, dropout=r)
            for a in (1e-4, 0.5) for lr in (1e-3, 3e-2) for r in (0.1, 0.4)]
    fitted = lambda e: e.fit(x, y).predict_proba(x)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted(est)
        with compilations() as compiles:
            probas = [fitted(clone(est).set_params(**p)) for p in grid]
    assert compiles == []
    assert len({p.tobytes() for p in probas}) == len(grid)


def test_partial_fit_runs_one_epoch_per_call():
    x, y = _blobs(n=60)
    est = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(x, y)
    for i in range(3):
        est.partial_fit(x, y, classes=[0, 1, 2])
        assert est.n_iter_ == i + 1 and len(est.loss_curve_) == i + 1
    assert est.loss_curve_[-1] < est.loss_curve_[0]
    with pytest.raises(ValueError, match=r"labels \[7\] not in classes_"):
        est.partial_fit(x[:3], np.array([0, 1, 7]))


def test_early_stopping_records_validation_scores_and_stops():
    x, y = _blobs(n=200)
    est = MLPClassifier(hidden_layer_sizes=(8,), early_stopping=True, max_iter=500, batch_size=32,
                        learning_rate_init=1e-2, random_state=0).fit(x, y)
    assert len(est.validation_scores_) == est.n_iter_ < 500
    assert est.best_validation_score_ == max(est.validation_scores_) > 0.9


def test_pipeline_grid_search_and_cross_val_score():
    x, y = _blobs(n=90)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=60, batch_size=16,
                                                         random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, x, y, cv=3, n_jobs=1)
        grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=3, n_jobs=1).fit(x, y)
    assert scores.shape == (3,) and scores.min() > 0.9
    assert grid.best_params_["mlpclassifier__alpha"] in (1e-4, 1e-1)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_pickle_and_checkpoint_round_trips(cls, tmp_path):
    x, y = _blobs(n=40)
    y = np.array(["a", "b", "c"])[y] if cls is MLPClassifier else y.astype(float)
    est = cls(hidden_layer_sizes=(6,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x, y)
    want = est.predict(x)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(x), want)
    path = est.save(tmp_path / "model.npz")
    back = cls.load(path)
    np.testing.assert_array_equal(back.predict(x), want)
    assert back.get_params() == est.get_params() and back.n_iter_ == est.n_iter_
    with pytest.raises(FileExistsError):
        est.save(path)
    est.save(path, overwrite=True)
    other = MLPRegressor if cls is MLPClassifier else MLPClassifier
    with pytest.raises(funcnn.checkpoint.CheckpointError, match=f"holds a '{cls.__name__}' estimator"):
        other.load(path)


@pytest.mark.parametrize("params,match", [
    (dict(optimizer="bogus"), r"optimizer must be one of .*got 'bogus'"),
    (dict(hidden_layer_sizes=(4, 0)), r"hidden_layer_sizes must be positive ints; got \(4, 0\)"),
    (dict(batch_size=0), r"batch_size must be 'auto' or an int >= 1; got 0"),
    (dict(validation_fraction=1.5), r"validation_fraction must be in \(0, 1\); got 1.5"),
    (dict(activation="nope"), r"nope"),
    (dict(alpha=-1.0), r"alpha must be a finite number >= 0; got -1.0"),
    (dict(alpha=float("nan")), r"alpha must be a finite number >= 0; got nan"),
    (dict(dropout=1.5), r"dropout.*1.5"),
])
def test_bad_parameters_name_themselves(params, match):
    x, y = _blobs(n=20)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(x, y)


def test_the_library_never_imports_sklearn():
    code = "import sys, funcnn, funcnn.cli; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vs_sklearn_script_writes_its_table(tmp_path, capsys):
    path = Path(__file__).parents[1] / "scripts" / "vs_sklearn.py"
    spec = importlib.util.spec_from_file_location("funcnn_script_vs_sklearn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--sets", "iris", "--folds", "2", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "vs_sklearn.csv").open()))
    assert [r["model"] for r in rows] == ["funcnn", "sklearn", "sklearn+scaler", "funcnn 64x64",
                                          "sklearn+scaler 64x64"]
    assert all(0 < float(r["score_mean"]) <= 1 and float(r["fit_s"]) > 0 for r in rows)
    out = capsys.readouterr().out
    assert "| iris | funcnn |" in out and "\niris: score " in out and "whole CV" in out


def test_grid_search_script_reports_fits_and_compilations(capsys):
    path = Path(__file__).parents[1] / "scripts" / "grid_search.py"
    spec = importlib.util.spec_from_file_location("funcnn_script_grid_search", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--alphas", "1e-4", "0.1", "--rates", "1e-3", "--dropouts", "0.1", "0.3", "--folds", "2",
            "--max-iter", "2"]
    assert mod.main(args) == 0
    out = capsys.readouterr().out
    assert "4 combinations x 2 folds + the refit (9 fits) in " in out and " XLA compilations, " in out
    assert "best {'alpha': " in out and "mean CV accuracy 0." in out
