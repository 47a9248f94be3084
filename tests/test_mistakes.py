"""``funcnn mistakes``: which test images are wrong, in which order, and what is written and printed."""
import json

import jax.numpy as jnp
import numpy as np
from app_helpers import digits_run

import funcnn
from funcnn import checkpoint, cli, experiment
from funcnn import config as cfglib
from funcnn.app import mistakes

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


def test_the_command_and_train_write_the_mistakes(capsys):
    run = digits_run()
    capsys.readouterr()  # what training printed, if this test trained the shared run
    assert "mistakes.png" in " ".join(json.loads((run / "summary.json").read_text())["plots"])  # by train
    for name in ("mistakes.png", "confusion.png"):
        (run / name).unlink()
    assert cli.main(["mistakes", str(run), "--top", "3"]) == 0
    out = capsys.readouterr().out
    cfg = cfglib.config_from_dict(json.loads((run / "config.json").read_text()))
    split = experiment.load_split(cfg)
    ckpt = checkpoint.load(run / "best.ckpt")
    wrong = int(np.sum(np.asarray(ckpt.net.predict(ckpt.params, split.x_test)) != np.asarray(split.y_test)))
    assert out.splitlines()[0] == (f"digits-tiny: {wrong} of {split.y_test.shape[0]} test images misclassified "
                                   f"({100 * wrong / split.y_test.shape[0]:.2f}%)")
    assert "most confused pairs" in out and out.count("  test image ") == min(3, wrong)
    for name in ("mistakes.png", "confusion.png"):
        assert (run / name).read_bytes()[:8] == PNG and f"wrote {run / name}" in out


def test_bad_top_is_one_line(capsys):
    assert cli.main(["mistakes", str(digits_run()), "--top", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == ["funcnn: error: --top must be at least 1; got 0."]
