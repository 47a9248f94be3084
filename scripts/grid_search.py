"""What a scikit-learn grid search over funcnn's estimator costs, and how much of it is compiling.

``GridSearchCV`` of ``funcnn.sklearn.MLPClassifier(random_state=0)`` on digits
over ``alpha`` x ``learning_rate_init`` x ``dropout`` (3 x 2 x 2 by default),
5-fold, ``n_jobs=1``, then the refit on all rows. Prints the wall time of the
search, how many XLA compilations ran and their seconds (counted with
``jax.monitoring``), and the best parameters and score. Those three
hyperparameters are traced scalars of funcnn's compiled epoch, so the count
should not grow with the grid: compare ``--alphas 1e-4`` (one alpha) with the
default. Run it in a fresh process, without a persistent compilation cache,
for the cold numbers.

    python scripts/grid_search.py
    python scripts/grid_search.py --alphas 1e-4 1e-3 --rates 1e-3 --dropouts 0.1
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from funcnn.sklearn import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_common.py, however this file is loaded
from _common import compilations  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alphas", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    ap.add_argument("--rates", type=float, nargs="+", default=[1e-3, 3e-3], help="learning_rate_init values")
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-iter", type=int, default=200)
    args = ap.parse_args(argv)
    x, y = load_digits(return_X_y=True)
    grid = {"alpha": args.alphas, "learning_rate_init": args.rates, "dropout": args.dropouts}
    combos = len(args.alphas) * len(args.rates) * len(args.dropouts)
    t = time.perf_counter()
    with warnings.catch_warnings(), compilations() as compiles:
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(MLPClassifier(random_state=0, max_iter=args.max_iter), grid, cv=args.folds,
                              n_jobs=1).fit(x, y)
    wall = time.perf_counter() - t
    print(f"GridSearchCV on digits: {combos} combinations x {args.folds} folds + the refit "
          f"({combos * args.folds + 1} fits) in {wall:.1f} s; {len(compiles)} XLA compilations, "
          f"{sum(compiles):.1f} s of them")
    print(f"best {search.best_params_}, mean CV accuracy {search.best_score_:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
