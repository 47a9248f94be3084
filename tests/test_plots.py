"""funcnn.plots: every function writes a real PNG; bad inputs are refused."""
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("matplotlib")

import funcnn  # noqa: E402
from funcnn import plots  # noqa: E402
from funcnn.train import History  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, expected):
    assert path == expected
    data = expected.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024
    # Atomic writes leave no temporary files behind.
    assert [p.name for p in expected.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_import_funcnn_does_not_import_matplotlib():
    # Run in a fresh interpreter: this one may already have matplotlib loaded.
    import subprocess

    code = "import sys, funcnn, funcnn.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("form", ["History", "dict", "records", "train_only"])
def test_plot_history(tmp_path, form):
    tl, vl, va = [2.0, 1.0, 0.5, 0.3], [2.1, 1.2, 0.7, 0.6], [0.3, 0.6, 0.8, 0.85]
    history = {
        "History": History(tl, vl, va, 3, False),
        "dict": {"train_loss": tl, "val_loss": vl, "val_accuracy": va},
        "records": [{"epoch": i, "train_loss": a, "val_loss": b, "val_accuracy": c}
                    for i, (a, b, c) in enumerate(zip(tl, vl, va))],
        "train_only": {"train_loss": tl},
    }[form]
    target = tmp_path / "sub" / "history.png"
    assert_png(plots.plot_history(history, target, title="t"), target)


def test_plot_history_rejects_empty_and_unknown(tmp_path):
    with pytest.raises(ValueError, match="train_loss"):
        plots.plot_history({"train_loss": []}, tmp_path / "h.png")
    with pytest.raises(TypeError, match="History"):
        plots.plot_history(3.0, tmp_path / "h.png")


def test_plot_gradient_errors(tmp_path):
    # A hand-built report: funcnn.gradcheck itself is tested in test_gradcheck.py,
    # and building one here would cost seconds of compilation.
    from funcnn.gradcheck import TOLERANCES, Comparison, GradcheckReport

    rows = []
    for layer, leaf in enumerate(["[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"]):
        for ref, err in (("reverse", 1e-16 * (layer + 1)), ("forward", 0.0), ("finite_diff", 3e-9)):
            tol = TOLERANCES[(ref, "float64")]
            rows.append(Comparison(leaf, layer // 2, ref, err, err, 1.0, (0,), tol, err <= tol, 0))
    report = GradcheckReport("gradcheck: 3-4-2 tanh", "float64", tuple(rows), None, 6e-6)
    target = tmp_path / "grad.png"
    assert_png(plots.plot_gradient_errors(report, target), target)


def test_plot_curves_categorical(tmp_path):
    target = tmp_path / "cat.png"
    assert_png(plots.plot_curves(["relu", "tanh", "gelu"], {"err": [1e-7, 2e-7, 0.0]}, target,
                                 xlabel="activation", ylabel="error", logy=True), target)


@pytest.mark.parametrize("output,loss,m", [("softmax", "cross_entropy", 3), ("sigmoid", "binary_cross_entropy", 1),
                                           ("identity", "mse", 1)])
def test_plot_decision_boundary(tmp_path, output, loss, m):
    net = funcnn.mlp([2, 5, m], hidden="tanh", output=output, loss=loss)
    params = net.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    y = np.arange(30) % 3 if m == 3 else (x[:, :1] > 0).astype(np.float32)
    target = tmp_path / f"boundary_{output}.png"
    assert_png(plots.plot_decision_boundary(net, params, x, y, target, resolution=40), target)


def test_plot_decision_boundary_rejects_non_2d_inputs(tmp_path):
    net = funcnn.mlp([3, 4, 2])
    params = net.init(jax.random.key(0))
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        plots.plot_decision_boundary(net, params, x, np.zeros(10, np.int32), tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


def test_plot_curves(tmp_path):
    target = tmp_path / "curves.png"
    out = plots.plot_curves([1, 2, 3], {"a": [1e-3, 1e-5, 0.0], "b": [1.0, 2.0, 3.0]}, target,
                            xlabel="step", ylabel="error", logy=True, title="t")
    assert_png(out, target)
    with pytest.raises(ValueError, match="xs has 3"):
        plots.plot_curves([1, 2, 3], {"a": [1.0]}, tmp_path / "c.png", xlabel="x", ylabel="y")


def _snapshot(ax) -> dict:
    """What the tests read from an axes, taken before ``_save`` releases the figure."""
    legend = ax.get_legend()
    return {"ylim": ax.get_ylim(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "label_box": ax.yaxis.label.get_window_extent(), "frame": ax.get_window_extent(),
            "collections": [(c.get_label(), np.asarray(c.get_offsets())) for c in ax.collections],
            "lines": [line.get_data() for line in ax.get_lines()],
            "legend": None if legend is None else (legend.get_title().get_text(),
                                                   [t.get_text() for t in legend.get_texts()])}


@pytest.fixture
def figures(monkeypatch):
    """Snapshots of the first axes of each figure drawn (taken before saving; the PNG is still written)."""
    drawn = []
    save = plots._save

    def keep(fig, path):
        fig.canvas.draw()
        drawn.append(_snapshot(fig.axes[0]))
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def test_gradient_errors_draw_exact_zeros_near_the_data_and_the_label_fits(tmp_path, figures):
    from funcnn.gradcheck import Comparison, GradcheckReport

    rows = [Comparison("[0]['W']", 0, "reverse", 2e-7, 2e-7, 1.0, (0,), 1e-4, True, 0),
            Comparison("[0]['b']", 0, "reverse", 0.0, 0.0, 1.0, (0,), 1e-4, True, 0)]
    plots.plot_gradient_errors(GradcheckReport("gradcheck: 2-1 identity", "float32", tuple(rows), None, 1e-3),
                               tmp_path / "g.png")
    ax = figures[-1]
    assert ax["ylim"][0] > 1e-9  # the zero sits one decade below 2e-7, not at 1e-18
    zeros = [off for name, off in ax["collections"] if name == "reverse: exactly 0"]
    assert len(zeros) == 1 and zeros[0][0][1] == pytest.approx(1e-8)
    label, frame = ax["label_box"], ax["frame"]
    assert label.height <= frame.height and label.y1 <= frame.y1 + 1  # the label does not run into the title


def test_decision_boundary_has_a_class_legend_and_says_standardised(tmp_path, figures):
    net = funcnn.mlp([2, 4, 3], hidden="tanh")
    params = net.init(jax.random.key(0))
    x = np.random.default_rng(1).normal(size=(12, 2)).astype(np.float32)
    plots.plot_decision_boundary(net, params, x, np.arange(12) % 3, tmp_path / "b.png", resolution=20,
                                 standardized=True)
    ax = figures[-1]
    assert ax["legend"] == ("test points", ["class 0", "class 1", "class 2"])
    assert ax["xlabel"] == "x[:, 0] (standardised)" and ax["ylabel"] == "x[:, 1] (standardised)"


def test_plot_fit_draws_the_network_over_the_data(tmp_path, figures):
    net = funcnn.mlp([1, 8, 1], hidden="tanh", output="identity", loss="mse")
    params = net.init(jax.random.key(0))
    x = np.linspace(-2, 2, 15, dtype=np.float32)[:, None]
    target = tmp_path / "fit.png"
    assert_png(plots.plot_fit(net, params, x, np.sin(x), target), target)
    ax = figures[-1]
    ((gx, gy),) = ax["lines"]
    assert gx[0] == pytest.approx(-2) and gx[-1] == pytest.approx(2)
    W0, b0, W1, b1 = (np.asarray(params[i][k], np.float64) for i in (0, 1) for k in ("W", "b"))
    np.testing.assert_allclose(gy, (np.tanh(gx[:, None] @ W0 + b0) @ W1 + b1)[:, 0], rtol=1e-5, atol=1e-6)
    assert len(ax["collections"][0][1]) == 15
    with pytest.raises(ValueError, match="1 input and 1 output"):
        plots.plot_fit(funcnn.mlp([2, 3, 1], output="identity", loss="mse"), params, x, x, tmp_path / "no.png")


def test_history_of_a_full_batch_run_is_its_loss_per_iteration(tmp_path, figures):
    import json
    from pathlib import Path

    from funcnn import cli

    config = Path(__file__).resolve().parent.parent / "configs" / "two_lines.toml"
    run = tmp_path / "lbfgs"
    assert cli.main(["train", str(config), "--out", str(run), "--quiet", "--set", "optimizer.name=lbfgs",
                     "--set", "training.batch_size=0", "--set", "optimizer.max_iters=12",
                     "--set", "output.gradcheck=false"]) == 0
    (m,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trace = m["iteration_losses"]
    assert len(trace) == m["iterations"] + 1 > 5 and trace[-1] == m["train_loss"]
    ax = figures[0]  # history.png is written first
    assert ax["xlabel"].startswith("iteration")
    (xs, ys), *_ = ax["lines"]
    assert list(xs) == list(range(len(trace))) and list(ys) == trace  # a curve, not one point per epoch
    assert (run / "history.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plot_history_of_iterations(tmp_path):
    target = tmp_path / "h.png"
    records = [{"epoch": 0, "train_loss": 0.1, "val_loss": 0.2, "iteration_losses": [1.0, 0.5, 0.2, 0.1]}]
    assert_png(plots.plot_history(records, target, title="t"), target)
    assert_png(plots.plot_history({"iteration_losses": [1.0, 0.5]}, target), target)
