"""``funcnn playground``: the JSON API over HTTP on 127.0.0.1, every bad request, the command's errors.

The server runs in a thread of this process on a free port; the model is the
shared tiny digits run (``app_helpers.digits_run``). References are computed
independently of the server: ``funcnn predict`` in a subprocess, ``jax.grad``
of the plainly written probability, and the hidden layer written out in NumPy.
"""
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from app_helpers import cli_env, digits_run, run_cli

import funcnn
from funcnn import checkpoint, cli, data, train
from funcnn.app import imagemodel, playground


@pytest.fixture(scope="module")
def model():
    return imagemodel.load(digits_run())


@pytest.fixture(scope="module")
def server(model):
    srv = playground.make_server(model, playground.load_samples(model, None), port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv.server_address[:2]
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def request(addr, method, path, body=None, headers=None):
    """(status, content type, parsed JSON or raw bytes) of one request on a fresh connection."""
    conn = http.client.HTTPConnection(*addr, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
        ctype = r.getheader("Content-Type", "")
        return r.status, ctype, json.loads(raw) if ctype.startswith("application/json") else raw
    finally:
        conn.close()


def raw_request(addr, data: bytes) -> tuple[int, dict]:
    """Sends bytes as they are (for requests http.client will not make); (status, JSON body)."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(addr, doc):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return request(addr, "POST", "/api/predict", body, {"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def test_images(model):
    x, y = imagemodel.raw_test_split(model.config)
    return x[:6], y[:6]


def test_model_endpoint_describes_the_run(server):
    status, ctype, doc = request(server, "GET", "/api/model")
    assert status == 200 and ctype == "application/json"
    assert doc["input_size"] == 64 and doc["side"] == 8 and doc["box"] == [8, 7] and doc["pen"] == 2
    assert doc["centre"] == "box"  # the 8x8 digits' bitmaps were framed by their box; MNIST's by mass
    assert doc["classes"] == list(range(10)) and doc["run"] == "digits-tiny"
    assert doc["hidden_sizes"] == [32] and "digits test split" in doc["samples"]


def test_predictions_equal_funcnn_predict_on_the_same_pixels(server, test_images, tmp_path):
    x, _ = test_images
    np.save(tmp_path / "x.npy", x)
    done = run_cli("predict", digits_run() / "best.ckpt", tmp_path / "x.npy", "--out", tmp_path / "p.npy")
    assert done.returncode == 0, done.stderr
    want = np.load(tmp_path / "p.npy")  # [6, 10], float32 as funcnn predict computed them
    for row, pixels in zip(want, x, strict=True):
        status, _, doc = post(server, {"pixels": pixels.tolist()})
        assert status == 200, doc
        np.testing.assert_allclose(doc["probabilities"], row, rtol=1e-6, atol=1e-9)
        assert doc["label"] == int(np.argmax(row))


def test_hidden_and_saliency_match_independent_references(server, model, test_images):
    x, _ = test_images
    params = model.params
    mean, std = np.asarray(model.standardizer.mean, np.float64), np.asarray(model.standardizer.std, np.float64)
    W0, b0 = np.asarray(params[0]["W"], np.float64), np.asarray(params[0]["b"], np.float64)

    def p_of(pixels, k):  # the probability of class k, written plainly; jax.grad is the reference
        h = jnp.maximum(((pixels - mean) / std) @ W0 + b0, 0.0)
        z = h @ jnp.asarray(params[1]["W"], jnp.float64) + jnp.asarray(params[1]["b"], jnp.float64)
        return jax.nn.softmax(z)[k]

    for pixels in x[:3]:
        status, _, doc = post(server, {"pixels": pixels.tolist()})
        assert status == 200
        np.testing.assert_allclose(doc["hidden"][0], np.maximum(((pixels - mean) / std) @ W0 + b0, 0), rtol=1e-4,
                                   atol=1e-5)
        want = np.asarray(jax.grad(p_of)(jnp.asarray(pixels, jnp.float64), doc["label"]))
        scale = np.abs(want).max()
        assert scale > 0
        np.testing.assert_allclose(doc["saliency"], want, atol=1e-4 * scale)  # float32 model vs float64 reference


def test_samples_are_the_runs_test_images_with_their_predictions(server, model):
    status, _, doc = request(server, "GET", "/api/samples?n=5")
    assert status == 200
    x = np.asarray(doc["images"])
    assert x.shape == (5, 64) and x.min() >= 0 and x.max() <= 1
    all_x, all_y = imagemodel.raw_test_split(model.config)
    rows = [int(np.flatnonzero((all_x == img).all(axis=1))[0]) for img in x]  # each image is a test image
    assert doc["labels"] == all_y[rows].tolist()
    xs = data.standardize_apply(model.standardizer, jnp.asarray(x, jnp.float32))
    assert doc["predictions"] == np.asarray(model.net.predict(model.params, xs)).tolist()


def test_test_images_come_from_a_named_file_never_from_a_path_in_the_checkpoint(model, tmp_path):
    x = np.random.default_rng(0).uniform(size=(5, 64))
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(5))
    got = playground.load_samples(model, str(tmp_path / "mine.npz"))  # --data FILE.npz
    assert got.source == "mine.npz" and got.y.tolist() == list(range(5))
    np.testing.assert_array_equal(got.x, x)
    # A run on a user's file (data.name = "csv" with its path in the config): nothing is read.
    cfg = dict(model.config, data=dict(model.config["data"], name="csv", path=str(tmp_path / "mine.npz")))
    assert playground.load_samples(model._replace(config=cfg), None) is None
    for bad, words in [({"x": x}, "arrays 'x'"), ({"x": x[:, :10], "y": np.arange(5)}, "x must be [n, 64]"),
                       ({"x": 2 * x, "y": np.arange(5)}, "pixels must be in [0, 1]")]:
        np.savez(tmp_path / "bad.npz", **bad)
        with pytest.raises(ValueError, match=re.escape(words)):
            playground.load_samples(model, str(tmp_path / "bad.npz"))


def test_page_and_its_files_are_served(server):
    for path, kind, text in [("/", "text/html", b"funcnn"), ("/index.html", "text/html", b"<canvas id=\"pad\""),
                             ("/app.js", "text/javascript", b"/api/predict"), ("/style.css", "text/css", b"#pad")]:
        status, ctype, body = request(server, "GET", path)
        assert status == 200 and ctype.startswith(kind) and text in body, path


_BIG = b'{"pixels": [' + b"0.0, " * 30000 + b"0.0]}"
BAD_POSTS = [
    # (body, status, words the error must contain)
    (b'{"pixels": [0.1,', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[0.5, 0.5]", 400, "JSON object"),
    (b"{}", 400, "JSON object"),
    (b'{"pixels": "all of them"}', 400, "must be a list of 64"),
    (json.dumps({"pixels": [0.5] * 63}).encode(), 400, "64 values"),
    (json.dumps({"pixels": [0.5] * 65}).encode(), 400, "got 65"),
    (json.dumps({"pixels": [0.5] * 10 + ["0.5"] + [0.5] * 53}).encode(), 400, 'pixels[10] is "0.5", not a number'),
    (json.dumps({"pixels": [None] + [0.5] * 63}).encode(), 400, "pixels[0] is null, not a number"),
    (json.dumps({"pixels": [True] + [0.5] * 63}).encode(), 400, "not a number"),
    (json.dumps({"pixels": [[0.5]] + [0.5] * 63}).encode(), 400, "not a number"),
    (b'{"pixels": [NaN' + b", 0.5" * 63 + b"]}", 400, "pixels[0] is NaN"),
    (b'{"pixels": [0.5, Infinity' + b", 0.5" * 62 + b"]}", 400, "pixels[1] is Infinity"),
    (b'{"pixels": [0.5, -Infinity' + b", 0.5" * 62 + b"]}", 400, "pixels[1] is -Infinity"),
    (b'{"pixels": [1e999' + b", 0.5" * 63 + b"]}", 400, "pixels[0] is inf; every pixel must be a finite"),
    (json.dumps({"pixels": [0.5] * 5 + [-0.25] + [0.5] * 58}).encode(), 400, "pixels[5] is -0.25, outside [0, 1]"),
    (json.dumps({"pixels": [0.5] * 63 + [1.5]}).encode(), 400, "pixels[63] is 1.5, outside [0, 1]"),
    (_BIG, 413, "the limit is 3072"),
]


@pytest.mark.parametrize("body,status,words", BAD_POSTS, ids=[w[:24] for *_, w in BAD_POSTS])
def test_bad_predict_requests_get_a_4xx_naming_the_problem(server, body, status, words):
    got, ctype, doc = post(server, body)
    assert (got, ctype) == (status, "application/json")
    assert words in doc["error"], doc
    assert request(server, "GET", "/api/model")[0] == 200  # the server still answers


BAD_GETS = [
    ("GET", "/nope", 404, "no such page: /nope"),
    ("GET", "/../funcnn/app/playground.py", 404, "no such page"),
    ("GET", "/static/../../checkpoint.py", 404, "no such page"),
    ("GET", "/static/../../etc/passwd", 404, "no such page: /static/../../etc/passwd"),
    ("GET", "/../../../../etc/passwd", 404, "no such page"),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", 404, "no such page: /%2e%2e/%2e%2e/etc/passwd"),
    ("GET", "/static/%2e%2e/%2e%2e/etc/passwd", 404, "no such page"),
    ("GET", "/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404, "no such page"),
    ("GET", "/..%2f..%2f..%2fetc%2fpasswd", 404, "no such page"),
    ("GET", "/%252e%252e/etc/passwd", 404, "no such page"),
    ("GET", "/..\\..\\etc\\passwd", 404, "no such page"),
    ("GET", "//etc/passwd", 404, "no such page: /etc/passwd;"),  # http.server collapses the leading //
    ("GET", "/app.js%00.html", 404, "no such page"),
    ("GET", "/static/", 404, "no such page"),
    ("GET", "/static", 404, "no such page"),
    ("GET", "/funcnn/app/static/", 404, "no such page"),
    ("GET", "/./", 404, "no such page"),
    ("GET", "/app.js/", 404, "no such page"),
    ("GET", "/api/predict", 405, "POST /api/predict"),
    ("POST", "/api/model", 405, "POST is only for /api/predict"),
    ("POST", "/nope", 404, "POST is only for /api/predict"),
    ("GET", "/api/samples?n=0", 400, "n must be an integer from 1 to 64; got 0"),
    ("GET", "/api/samples?n=1000", 400, "got 1000"),
    ("GET", "/api/samples?n=five", 400, "got 'five'"),
    ("DELETE", "/api/model", 405, "method 'DELETE' is not allowed; this server answers GET, HEAD and POST"),
    ("PUT", "/api/predict", 405, "method 'PUT' is not allowed"),
    ("BREW", "/", 405, "method 'BREW' is not allowed"),
]


@pytest.mark.parametrize("method,path,status,words", BAD_GETS, ids=[f"{m} {p}" for m, p, *_ in BAD_GETS])
def test_unknown_paths_and_methods_get_a_json_4xx(server, method, path, status, words):
    got, ctype, doc = request(server, method, path, b"{}" if method == "POST" else None)
    assert (got, ctype) == (status, "application/json")
    assert words in doc["error"], doc
    assert "root:" not in json.dumps(doc)  # no file outside the package's static files is ever read
    assert request(server, "GET", "/api/model")[0] == 200  # the server still answers


@pytest.mark.parametrize("data,status,words", [
    (b"POST /api/predict HTTP/1.1\r\nHost: x\r\n\r\n", 411, "Content-Length header is required"),
    (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n", 400, "is not a number"),
    (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413, "the limit is"),
    (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "Content-Length -5 is negative"),
    (b"GET / / HTTP/1.1\r\n\r\n", 400, "Bad request syntax"),
])
def test_malformed_http_gets_a_json_4xx(server, data, status, words):
    got, doc = raw_request(server, data)
    assert got == status and words in doc["error"], doc
    assert request(server, "GET", "/api/model")[0] == 200


def test_a_non_image_model_is_refused_naming_why(tmp_path, capsys):
    key = jax.random.key(0)
    for sizes, kw, words in [([10, 4, 3], {}, "takes 10 features, which is not k*k"),
                             ([16, 4, 1], {"output": "identity", "loss": "mse"}, "output is 'identity'")]:
        net = funcnn.mlp(sizes, **kw)
        with pytest.raises(ValueError, match=words.replace("*", r"\*").replace("(", r"\(")):
            imagemodel.image_side(net)
    net = funcnn.mlp([10, 4, 3])
    state = train.TrainState(net.init(key), (), jnp.zeros((), jnp.int32), key)
    checkpoint.save(tmp_path / "tabular.ckpt", state, spec=net.spec)
    done = run_cli("playground", tmp_path / "tabular.ckpt", "--port", "0")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["funcnn: error: the playground needs a square image as input; this network "
                                        "takes 10 features, which is not k*k for any image side k >= 2."]
    assert cli.main(["playground", str(tmp_path / "missing")]) == 2  # in-process: the same error boundary
    assert capsys.readouterr().err.splitlines() == [
        f"funcnn: error: no such run directory or checkpoint: {tmp_path / 'missing'}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host", [None, "0.0.0.0"])
def test_the_command_serves_until_ctrl_c_and_stops_with_one_line(host):
    # As a user meets it: `funcnn playground RUN [--host H] --port P`, requests, then Ctrl-C (SIGINT).
    port = _free_port()
    args = ["--port", str(port)] + ([] if host is None else ["--host", host])
    proc = subprocess.Popen([sys.executable, "-m", "funcnn", "playground", str(digits_run()), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        first = proc.stdout.readline()  # blocks until the server is listening
        shown = host or "127.0.0.1"
        assert first == (f"funcnn playground: digits-tiny (8x8 images, 10 classes) at http://{shown}:{port}/  "
                         "(Ctrl-C stops)\n"), first
        assert post(("127.0.0.1", port), b"not json")[0] == 400
        assert request(("127.0.0.1", port), "GET", "/api/model")[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["funcnn playground: stopped."]
    if host is None:
        assert err == ""
    else:  # anything but this machine's own address is reachable from the network: say so, once, on stderr
        assert err.splitlines() == [f"funcnn playground: warning: serving on {host}, so other machines can reach "
                                    "it; use the default 127.0.0.1 to keep it local."]
