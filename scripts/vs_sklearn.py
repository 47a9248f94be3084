"""funcnn.sklearn against scikit-learn's own MLPs, side by side: the numbers behind the README table.

On the data sets scikit-learn ships offline (digits, iris, wine, breast cancer;
diabetes and one generated set for regression), 5-fold cross-validation
(stratified for classification) of

* ``funcnn``          funcnn.sklearn.MLPClassifier / MLPRegressor, defaults;
* ``sklearn``         sklearn.neural_network.MLPClassifier / MLPRegressor, defaults;
* ``sklearn+scaler``  the same behind a StandardScaler (funcnn standardises inside
                      the estimator by default): the same architecture (100 relu
                      units), optimizer (Adam, 1e-3), alpha and stopping rule as
                      funcnn's defaults; only the batch size rule differs
                      (funcnn: at most a quarter of the rows per batch);
* ``funcnn 64x64``, ``sklearn+scaler 64x64``  equal architectures and equal
                      settings in both: two hidden layers of 64 relu units,
                      batch size 64, everything else at the defaults.

funcnn's defaults were chosen on digits, iris and wine; breast cancer was held
out (run only after choosing) and is marked ``(held out)``.

Score (accuracy, or R^2) mean and std over folds; fit seconds of the first
fold (``fit_first_s``: funcnn compiles its programs there, once per bucket of
row counts, so later folds compile nothing) and the mean over the other folds
(``fit_s``: what every refit of a grid search or a cross-validation costs);
``cv_s``: all fits of the cross-validation together, compilation included;
predict seconds (mean over the other folds); ``compile_s`` and ``compilations``:
the XLA compilations during the cross-validation (counted with
``jax.monitoring``: funcnn's alone, scikit-learn compiles nothing). One process, one run,
``random_state=0`` everywhere. The closing lines check funcnn's claim on each
classification set: its defaults score at least as well as scikit-learn's and
fit faster.

    python scripts/vs_sklearn.py                   # every set, prints a Markdown table
    python scripts/vs_sklearn.py --sets iris wine --out results/
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from funcnn.sklearn import MLPClassifier, MLPRegressor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_common.py, however this file is loaded
from _common import compilations  # noqa: E402


def _friedman():
    return datasets.make_friedman1(n_samples=1000, noise=0.5, random_state=0)


SETS = {  # name -> (loader, task)
    "digits": (lambda: datasets.load_digits(return_X_y=True), "classification"),
    "iris": (lambda: datasets.load_iris(return_X_y=True), "classification"),
    "wine": (lambda: datasets.load_wine(return_X_y=True), "classification"),
    "breast_cancer": (lambda: datasets.load_breast_cancer(return_X_y=True), "classification"),
    "diabetes": (lambda: datasets.load_diabetes(return_X_y=True), "regression"),
    "friedman1": (_friedman, "regression"),
}
HELD_OUT = ("breast_cancer",)  # not looked at while funcnn's defaults were chosen
EQUAL = dict(hidden_layer_sizes=(64, 64), batch_size=64)  # the equal-architecture rows' settings


def _models(ours, theirs) -> dict:
    return {"funcnn": lambda: ours(random_state=0),
            "sklearn": lambda: theirs(random_state=0),
            "sklearn+scaler": lambda: make_pipeline(StandardScaler(), theirs(random_state=0)),
            "funcnn 64x64": lambda: ours(random_state=0, **EQUAL),
            "sklearn+scaler 64x64": lambda: make_pipeline(StandardScaler(), theirs(random_state=0, **EQUAL))}


MODELS = {"classification": _models(MLPClassifier, SkClassifier), "regression": _models(MLPRegressor, SkRegressor)}
FIELDS = ("dataset", "model", "score_mean", "score_std", "fit_first_s", "fit_s", "cv_s", "predict_s", "compile_s",
          "compilations")


def evaluate(make, x, y, task: str, folds: int) -> dict:
    split = (StratifiedKFold if task == "classification" else KFold)(folds, shuffle=True, random_state=0)
    scores, fit_s, pred_s = [], [], []
    with compilations() as compiles:
        for tr, te in split.split(x, y):
            est = make()
            t = time.perf_counter()
            est.fit(x[tr], y[tr])
            fit_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            est.predict(x[te])
            pred_s.append(time.perf_counter() - t)
            scores.append(est.score(x[te], y[te]))
    return {"score_mean": float(np.mean(scores)), "score_std": float(np.std(scores)), "fit_first_s": fit_s[0],
            "fit_s": float(np.mean(fit_s[1:])), "cv_s": float(np.sum(fit_s)), "predict_s": float(np.mean(pred_s[1:])),
            # XLA compilations during the cross-validation (fits, predictions and scores): funcnn's alone
            "compile_s": float(np.sum(compiles)), "compilations": len(compiles)}


def verdicts(rows: list[dict]) -> list[str]:
    """One line per classification set: do funcnn's defaults score >= scikit-learn's and fit faster?"""
    by = {(r["dataset"], r["model"]): r for r in rows}
    lines = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        if SETS[name][1] != "classification":
            continue
        ours, theirs = by[(name, "funcnn")], by[(name, "sklearn")]
        score = ours["score_mean"] >= theirs["score_mean"]
        lines.append(f"{name}{' (held out)' if name in HELD_OUT else ''}: score {ours['score_mean']:.4f} vs "
                     f"{theirs['score_mean']:.4f} {'>=' if score else '<'}; refit {ours['fit_s']:.3f} s vs "
                     f"{theirs['fit_s']:.3f} s ({theirs['fit_s'] / ours['fit_s']:.1f}x); whole CV "
                     f"{ours['cv_s']:.2f} s vs {theirs['cv_s']:.2f} s ({theirs['cv_s'] / ours['cv_s']:.1f}x; funcnn's "
                     f"{ours['compilations']} XLA compilations took {ours['compile_s']:.2f} s of it)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="e.g. python scripts/vs_sklearn.py --sets iris wine --out results/")
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", help="a directory to write vs_sklearn.csv to (default: print only)")
    args = ap.parse_args(argv)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # both libraries warn at max_iter alike
        for name in args.sets:
            load, task = SETS[name]
            x, y = load()
            for model, make in MODELS[task].items():
                rows.append({"dataset": name, "model": model, **evaluate(make, x, y, task, args.folds)})
                r = rows[-1]
                print(f"{name:<14} {model:<21} {r['score_mean']:.4f} +- {r['score_std']:.4f}  "
                      f"fit first {r['fit_first_s']:.3f} s, then {r['fit_s']:.3f} s  "
                      f"predict {r['predict_s'] * 1e3:.2f} ms", flush=True)
    print(f"\n| dataset | model | score (mean +- std, {args.folds}-fold) | first fit s | fit s | CV s | predict ms |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        held = " (held out)" if r["dataset"] in HELD_OUT else ""
        print(f"| {r['dataset']}{held} | {r['model']} | {r['score_mean']:.4f} +- {r['score_std']:.4f} | "
              f"{r['fit_first_s']:.3f} | {r['fit_s']:.3f} | {r['cv_s']:.2f} | {r['predict_s'] * 1e3:.2f} |")
    print("\n" + "\n".join(verdicts(rows)))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / "vs_sklearn.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
