"""The scripts in scripts/ run end to end on small arguments and write what they promise.

Scripts are not a package: each is loaded from its file and its ``main(argv)``
called in-process (the conftest's strict rank promotion applies to them too).
"""
import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parents[1] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"funcnn_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_csv(path: Path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


@pytest.mark.parametrize("name", ["compare_gradients", "gradient_parity", "backward_cost", "reproduce_examples"])
def test_help_describes_the_script(name, capsys):
    with pytest.raises(SystemExit) as e:
        load(name).main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out and f"python scripts/{name}.py" in out


def test_compare_gradients_quick(tmp_path, capsys):
    mod = load("compare_gradients")
    # --quick (3 activations, depth 1), narrowed to one pair to keep the test fast.
    status = mod.main(["--quick", "--pairs", "softmax/cross_entropy", "--repeats", "2", "--out", str(tmp_path)])
    assert status == 0
    header, rows = read_csv(tmp_path / "compare_gradients.csv")
    assert tuple(header) == mod.FIELDS
    assert [(r["hidden"], r["dtype"]) for r in rows] == [
        (a, d) for d in ("float32", "float64") for a in mod.QUICK_ACTIVATIONS]
    for r in rows:
        assert r["sizes"] == "8-16-3" and r["passed"] == "True"
        limit = 1e-4 if r["dtype"] == "float32" else 1e-10
        assert float(r["err_reverse"]) <= limit and float(r["err_forward"]) <= limit
        assert float(r["err_finite_diff"]) <= 1e-4
        assert min(float(r[f"t_{m}_us"]) for m in mod.METHODS) > 0
    out = capsys.readouterr().out
    assert "finite_diff  float64" in out and "pass" in out
    if importlib.util.find_spec("matplotlib") is not None:  # the plot is optional, the CSV is not
        assert (tmp_path / "compare_gradients.png").stat().st_size > 1024


def test_gradient_parity_five_steps(tmp_path, capsys):
    mod = load("gradient_parity")
    assert mod.main(["--steps", "5", "--out", str(tmp_path)]) == 0
    header, rows = read_csv(tmp_path / "gradient_parity.csv")
    assert tuple(header) == mod.FIELDS
    assert [(r["dtype"], int(r["step"])) for r in rows] == [(d, s) for d in ("float32", "float64")
                                                            for s in range(1, 6)]
    for r in rows:
        # Five steps from the same key: the runs differ by rounding only.
        limit = 1e-5 if r["dtype"] == "float32" else 1e-13
        assert float(r["rel_param_diff"]) <= limit
        assert float(r["abs_loss_diff"]) <= limit
    out = capsys.readouterr().out
    assert "float64" in out and "largest parameter difference" in out


def test_backward_cost_tiny(tmp_path, capsys):
    mod = load("backward_cost")
    assert mod.main(["--sizes", "6", "5", "3", "--batch", "4", "--repeats", "2", "--out", str(tmp_path)]) == 0
    header, rows = read_csv(tmp_path / "backward_cost.csv")
    assert tuple(header) == mod.FIELDS
    assert [(r["scope"], r["method"]) for r in rows] == [
        ("network", "manual"), ("network", "autodiff"), ("network", "manual vjp"),
        ("layer 0 6x5 dW db", "manual"), ("layer 0 6x5 dW db", "autodiff"),
        ("layer 1 5x3 dW db dx", "manual"), ("layer 1 5x3 dW db dx", "autodiff")]
    for r in rows:
        assert float(r["median_us"]) > 0
    # Layer rows: analytic FLOPs are 2 n fan_in fan_out per matmul plus n fan_out for db.
    assert float(rows[3]["analytic_flops"]) == 2 * 4 * 6 * 5 + 4 * 5
    assert float(rows[5]["analytic_flops"]) == 2 * 2 * 4 * 5 * 3 + 4 * 3
    assert "manual / autodiff" in capsys.readouterr().out


def test_reproduce_examples_all_ok(tmp_path, capsys):
    mod = load("reproduce_examples")
    assert mod.main(["--out", str(tmp_path)]) == 0
    header, rows = read_csv(tmp_path / "reproduce_examples.csv")
    assert header == ["example", "quantity", "ours", "published", "abs_diff", "tolerance", "result"]
    assert len(rows) >= 20 and all(r["result"] == "OK" for r in rows)
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    table = lines[start:lines.index("", start)]  # the rows between the rule and the blank line
    assert len(table) == len(rows)
    assert all(line.rstrip().endswith(" OK") for line in table)
    assert f"{len(rows)} of {len(rows)} OK" in out


def test_reproduce_examples_reports_a_mismatch(tmp_path, monkeypatch, capsys):
    mod = load("reproduce_examples")
    monkeypatch.setitem(mod.RELU_231, "loss", 161.0)
    assert mod.main(["--out", str(tmp_path)]) == 1
    assert "MISMATCH" in capsys.readouterr().out
