"""``funcnn mistakes``: which test images are wrong, in which order, and what is written and printed."""
import json
import shutil

import jax.numpy as jnp
import numpy as np
from app_helpers import digits_run, run_cli

import funcnn
from funcnn import checkpoint, cli, experiment
from funcnn import config as cfglib
from funcnn.app import imagemodel, mistakes

PNG = b"\x89PNG\r\n\x1a\n"


def test_find_sorts_the_wrong_answers_by_confidence():
    # One softmax layer over 2x2 "images" whose logits are 4 * (the first three pixels): the class is the
    # brightest of them, so every expected answer below is worked out by hand.
    net = funcnn.mlp([4, 3])
    W = jnp.asarray([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [0, 0, 0]])
    params = [{"W": W, "b": jnp.zeros(3)}]
    x = jnp.asarray([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0.6, 0.5, 0, 0], [0, 0, 1.0, 0], [0.9, 0, 0.1, 0]])
    y = jnp.asarray([0, 2, 1, 2, 2])  # rows 1, 2 and 4 are wrong: said 1, 0 and 0
    found = mistakes.find(net, params, x, y)
    p1 = np.exp(4) / (np.exp(4) + 2)  # row 1: p(1)
    p4 = np.exp(3.6) / (np.exp(3.6) + 1 + np.exp(0.4))  # row 4: p(0)
    p2 = np.exp(2.4) / (np.exp(2.4) + np.exp(2.0) + 1)  # row 2: p(0)
    assert found.index.tolist() == [1, 4, 2] and found.total == 5
    assert found.true.tolist() == [2, 2, 1] and found.predicted.tolist() == [1, 0, 0]
    np.testing.assert_allclose(found.confidence, [p1, p4, p2], rtol=1e-6)
    assert found.confusion.tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 1]]


def test_confused_pairs_and_ascii():
    cm = np.asarray([[5, 2, 0], [7, 4, 1], [0, 2, 9]])
    assert mistakes.confused_pairs(cm, top=3) == [(1, 0, 7), (0, 1, 2), (2, 1, 2)]
    text = mistakes.ascii_grid(np.asarray([[0.0, 1.0, 0.55, 0.05]]), ["a"], side=2)
    assert text.splitlines() == ["a", "  @@", "++"]  # 0.55 is in the 6th tenth: "+"; trailing blanks trimmed


def _expected(run):
    """The test split's mistakes worked out here: (raw images, labels, predictions, p(predicted), confusion)."""
    cfg = cfglib.config_from_dict(json.loads((run / "config.json").read_text()))
    split = experiment.load_split(cfg)
    ckpt = checkpoint.load(run / "best.ckpt")
    p = np.asarray(ckpt.net.apply(ckpt.params, split.x_test), np.float64)
    y, pred = np.asarray(split.y_test), p.argmax(axis=1)
    cm = np.zeros((10, 10), int)
    np.add.at(cm, (y, pred), 1)
    raw, _ = imagemodel.raw_test_split(json.loads((run / "config.json").read_text()))
    return raw, y, pred, p.max(axis=1), cm


def test_train_and_the_command_write_and_print_the_mistakes(tmp_path):
    run = tmp_path / "digits-tiny"
    shutil.copytree(digits_run(), run)  # trained by `funcnn train` in a subprocess (app_helpers)
    plots_written = json.loads((run / "summary.json").read_text())["plots"]
    for name in ("mistakes.png", "confusion.png"):  # by `funcnn train`, for an image classifier
        assert str(digits_run() / name) in plots_written and (run / name).read_bytes()[:8] == PNG
        (run / name).unlink()
    done = run_cli("mistakes", run, "--top", "3")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout.splitlines()
    raw, y, pred, conf, cm = _expected(run)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    assert out[0] == (f"digits-tiny: {wrong.size} of {y.size} test images misclassified "
                      f"({100 * wrong.size / y.size:.2f}%)")
    assert out[1] == "the 3 surest mistakes (true -> predicted, p(predicted), p(true)):"
    for line, i in zip(out[2:5], wrong[:3], strict=True):
        assert line.startswith(f"  test image {i:>4}: {y[i]} -> {pred[i]}  p={conf[i]:.3f}  p(true)="), line
    off = [(int(t), int(q), int(cm[t, q])) for t in range(10) for q in range(10) if t != q and cm[t, q]]
    top = sorted(off, key=lambda c: (-c[2], c[0], c[1]))[:5]
    assert out[5] == "most confused pairs (true -> predicted: count): " + ", ".join(
        f"{t} -> {q}: {c}" for t, q, c in top)
    # The ASCII images: a caption row, then 8 rows of two characters per pixel, one tenth of ink per shade.
    assert out[6] == "" and out[7].split() == [part for i in wrong[:3] for part in
                                               (f"{y[i]}->{pred[i]}", f"{conf[i]:.2f}")]
    shades = " .:-=+*#%@"
    for r in range(8):
        want = "  ".join("".join(2 * shades[min(9, int(v * 10))] for v in raw[i].reshape(8, 8)[r])
                         for i in wrong[:3])
        assert out[8 + r] == want.rstrip(), r
    assert out[16:] == [f"wrote {run / 'confusion.png'}", f"wrote {run / 'mistakes.png'}"]
    for name in ("mistakes.png", "confusion.png"):
        assert (run / name).read_bytes()[:8] == PNG


def test_the_png_grid_shows_image_true_predicted_and_probability(tmp_path, monkeypatch, capsys):
    from funcnn import plots

    drawn = {}
    monkeypatch.setattr(plots, "plot_image_grid", lambda images, captions, path, **kw: drawn.update(
        images=np.asarray(images), captions=list(captions), path=path, **kw) or path)
    run = tmp_path / "digits-tiny"
    shutil.copytree(digits_run(), run)
    assert cli.main(["mistakes", str(run), "--top", "4"]) == 0
    capsys.readouterr()
    raw, y, pred, conf, _ = _expected(run)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:4]
    np.testing.assert_array_equal(drawn["images"], raw[wrong])  # the test images as a person sees them
    assert drawn["captions"] == [f"true {y[i]}, said {pred[i]}\np={conf[i]:.2f}" for i in wrong]
    assert drawn["side"] == 8 and drawn["path"] == run / "mistakes.png" and "misclassified" in drawn["title"]


def test_bad_top_is_one_line(capsys):
    assert cli.main(["mistakes", str(digits_run()), "--top", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == ["funcnn: error: --top must be at least 1; got 0."]
