"""CSV regression and string labels, from the reader to `funcnn train` and `funcnn predict`."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from funcnn import checkpoint, cli, data

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
FAST = ["training.epochs=3", "output.plots=false", "output.gradcheck=false"]


def _train(tmp_path, config, *sets, out="run"):
    args = ["train", str(CONFIGS / f"{config}.toml"), "--out", str(tmp_path / out), "--quiet"]
    for s in [f"data.path={CONFIGS / 'data' / ('houses.csv' if 'regression' in config else 'pets.csv')}",
              *FAST, *sets]:
        args += ["--set", s]
    return cli.main(args)


def test_load_csv_maps_string_labels_in_sorted_order(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,kind\n1,dog\n2,cat\n3,dog\n4,emu\n")
    x, y, classes = data.load_csv(path, target="kind", return_classes=True)
    assert classes == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(np.asarray(y), [1, 0, 1, 2])
    assert np.asarray(y).dtype == np.int32 and x.shape == (4, 1)
    _, y, classes = data.load_csv(_write(tmp_path, "a,t\n1,3\n2,4\n"), target="t", return_classes=True)
    assert classes is None and np.asarray(y).tolist() == [3, 4]  # numbers stay numbers
    with pytest.raises(ValueError, match=r"'dog' is not a finite number.*return_classes=True"):
        data.load_csv(path, target="kind")  # without the flag: the old, explicit refusal


def _write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_csv_several_target_columns(tmp_path):
    p = _write(tmp_path, "a,u,b,v\n1,0.5,2,7\n3,1.5,4,8\n")
    x, y = data.load_csv(p, target=["u", "v"])
    np.testing.assert_array_equal(np.asarray(x), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(np.asarray(y), [[0.5, 7], [1.5, 8]])


def test_csv_regression_trains_and_reports_mse_rmse_r2(tmp_path, capsys):
    assert _train(tmp_path, "csv_regression", "training.epochs=40") == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]
    assert {"mse", "rmse", "r2"} <= set(summary) and "accuracy" not in summary
    assert summary["r2"] > 0.8  # price is nearly linear in the features
    np.testing.assert_allclose(summary["rmse"] ** 2, summary["mse"], rtol=1e-5)
    assert "R^2" in capsys.readouterr().out
    # evaluate on a CSV through the installed entry point: the [n] column is scored as [n, 1] targets
    r = subprocess.run([sys.executable, "-m", "funcnn", "evaluate", str(tmp_path / "run" / "final.ckpt"),
                        "--data", str(CONFIGS / "data" / "houses.csv"), "--target", "price"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    mse, rmse, r2 = (float(v) for v in re.search(r"MSE (\S+)  RMSE (\S+)  R\^2 (\S+)", r.stdout).groups())
    np.testing.assert_allclose(rmse ** 2, mse, rtol=1e-3)
    assert r2 > 0.8  # every row, the training rows too


def test_csv_regression_with_two_targets(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2))
    rows = "\n".join(f"{a:.4f},{b:.4f},{a + b:.4f},{a - b:.4f}" for a, b in x)
    path = _write(tmp_path, "a,b,s,d\n" + rows + "\n", "two.csv")
    assert _train(tmp_path, "csv_regression", f"data.path={path}", 'data.target=["s", "d"]',
                  "model.sizes=[2, 16, 2]", "data.standardize=false") == 0
    ck = checkpoint.load(tmp_path / "run" / "final.ckpt")
    assert ck.net.output_size == 2 and "r2" in ck.extra["test"]


def test_string_labels_round_trip_through_predict(tmp_path, capsys):
    assert _train(tmp_path, "csv_labels", "training.epochs=30") == 0
    ck = checkpoint.load(tmp_path / "run" / "final.ckpt")
    assert ck.extra["classes"] == ["cat", "dog", "fox"]
    inputs = _write(tmp_path, "height,weight\n2,1\n5,4\n2,5\n", "in.csv")  # the three centres
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "run" / "final.ckpt"), str(inputs), "--labels"]) == 0
    assert capsys.readouterr().out.split() == ["cat", "dog", "fox"]
    # evaluate --data with the names: mapped to the checkpoint's classes, not to the file's own order
    few = _write(tmp_path, "height,weight,species\n5,4,dog\n2,5,fox\n", "few.csv")
    assert cli.main(["evaluate", str(tmp_path / "run" / "final.ckpt"), "--data", str(few),
                     "--target", "species"]) == 0
    assert "accuracy 1.0000" in capsys.readouterr().out
    bad = _write(tmp_path, "height,weight,species\n5,4,emu\n", "bad.csv")
    assert cli.main(["evaluate", str(tmp_path / "run" / "final.ckpt"), "--data", str(bad),
                     "--target", "species"]) == 2
    assert "labels ['emu'] are not among the classes" in capsys.readouterr().err


def test_predict_labels_on_a_regression_model_is_a_one_line_error(tmp_path):
    assert _train(tmp_path, "csv_regression") == 0
    inputs = _write(tmp_path, "rooms,area,age\n3,80,10\n", "in.csv")
    r = subprocess.run([sys.executable, "-m", "funcnn", "predict", str(tmp_path / "run" / "final.ckpt"),
                        str(inputs), "--labels"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("funcnn: error: --labels:")
    assert "regression model (identity output)" in lines[0]
