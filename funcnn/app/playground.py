"""``funcnn playground``: draw a digit in the browser and watch a trained network classify it.

A local web server (standard library ``http.server``; one small page of
vanilla JS/CSS shipped in ``funcnn/app/static``, no build step, no CDN) and
a JSON API beside the page:

    GET  /api/model     {"input_size", "side", "box", "pen", "centre", "classes", "run", "hidden_sizes",
                         "samples"}
    POST /api/predict   {"pixels": [k*k row-major floats in [0, 1]]}
                        -> {"probabilities", "label", "hidden", "saliency"}
    GET  /api/samples?n=12   random test images of the run's own split with their predictions

Every bad request gets a 4xx and ``{"error": "..."}`` naming the problem;
no request can stop the server. Only the files in ``STATIC`` are served
(looked up by exact path, so there is no path traversal and no listing).
"""
from __future__ import annotations

import argparse
import http.server
import importlib.resources
import json
import math
import sys
import threading
import urllib.parse
import webbrowser
from pathlib import Path
from typing import NamedTuple

import numpy as np

from funcnn.app import imagemodel
from funcnn.errors import InvalidArgument

# path -> (package file, content type): the only files the server sends.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
PAGES = ", ".join(["GET " + p for p in STATIC if p != "/index.html"] + ["GET /api/model", "POST /api/predict",
                                                                        "GET /api/samples?n=12"])
# Data sets funcnn ships, so a run's test split can be re-created without reading a path from the checkpoint.
BUNDLED = ("digits",)
MAX_SAMPLES = 64
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Samples(NamedTuple):
    """Test images to show: raw pixels ``[n, k*k]`` in [0, 1] and true labels ``[n]``."""

    x: np.ndarray
    y: np.ndarray
    source: str  # where they come from, for the page


def body_limit(input_size: int) -> int:
    """The largest POST body accepted, in bytes: room for every pixel written out in full, no more."""
    return 1024 + 32 * input_size


def parse_pixels(body: bytes, input_size: int) -> np.ndarray:
    """The ``pixels`` of a predict request as float64 ``[input_size]``.

    Raises:
      RequestError: malformed JSON, no ``pixels`` list, wrong length, a value
        that is not a number, not finite or outside [0, 1].
    """
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=lambda c: c)  # NaN/Infinity stay strings
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or "pixels" not in doc:
        raise RequestError(400, 'the body must be a JSON object {"pixels": [...]}')
    pixels = doc["pixels"]
    if not isinstance(pixels, list):
        raise RequestError(400, f"pixels must be a list of {input_size} numbers; got {type(pixels).__name__}")
    if len(pixels) != input_size:
        raise RequestError(400, f"pixels must hold {input_size} values (the image, row-major); got {len(pixels)}")
    for i, v in enumerate(pixels):
        if v in ("NaN", "Infinity", "-Infinity"):
            raise RequestError(400, f"pixels[{i}] is {v}; every pixel must be a finite number in [0, 1]")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RequestError(400, f"pixels[{i}] is {json.dumps(v)[:40]}, not a number")
        if not math.isfinite(v):
            raise RequestError(400, f"pixels[{i}] is {v}; every pixel must be a finite number in [0, 1]")
        if not 0 <= v <= 1:
            raise RequestError(400, f"pixels[{i}] is {v}, outside [0, 1]")
    return np.asarray(pixels, np.float64)


def load_samples(model: imagemodel.ImageModel, data_path: str | None) -> Samples | None:
    """The images ``/api/samples`` draws from: a file given on the command line, else a bundled run's split.

    A path stored inside a checkpoint is never read (the user did not name it).

    Raises:
      ValueError: the file's arrays do not fit the model.
    """
    if data_path is not None:
        with np.load(data_path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise InvalidArgument(f"--data {data_path} must be an .npz with arrays 'x' (images, [n, "
                                 f"{model.net.input_size}] in [0, 1]) and 'y' (labels); it has {list(z)}.")
            x, y = z["x"].reshape(z["x"].shape[0], -1).astype(np.float64), z["y"].astype(np.int64).ravel()
        if x.shape[1] != model.net.input_size or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise InvalidArgument(f"--data {data_path}: x must be [n, {model.net.input_size}] with n labels in y; "
                             f"got x {list(x.shape)}, y {list(y.shape)}.")
        if not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise InvalidArgument(f"--data {data_path}: pixels must be in [0, 1] like the playground's drawings.")
        return Samples(x, y, Path(data_path).name)
    cfg = model.config or {}
    if cfg.get("data", {}).get("name") in BUNDLED:
        x, y = imagemodel.raw_test_split(cfg)
        return Samples(x, y, f"the run's {cfg['data']['name']} test split")
    return None


class Target(NamedTuple):
    path: str  # as sent, never decoded or normalised: it is only ever compared with STATIC's keys
    query: str


def _target(raw: str) -> Target:
    """A request target's path and query. Not ``urlsplit``: that reads ``//etc/passwd`` as host ``etc``."""
    path, _, query = raw.partition("#")[0].partition("?")
    return Target(path, query)


def _parse_n(query: str) -> int:
    values = urllib.parse.parse_qs(query).get("n", ["12"])
    try:
        n = int(values[-1])
    except ValueError:
        raise RequestError(400, f"n must be an integer from 1 to {MAX_SAMPLES}; got {values[-1]!r}") from None
    if not 1 <= n <= MAX_SAMPLES:
        raise RequestError(400, f"n must be an integer from 1 to {MAX_SAMPLES}; got {n}")
    return n


def make_handler(model: imagemodel.ImageModel, samples: Samples | None, *, seed: int = 0):
    """The request handler class for one model (the server builds one instance per request)."""
    rng = np.random.default_rng(seed)
    rng_lock = threading.Lock()
    hidden_sizes = [int(np.asarray(h).shape[-1]) for h in
                    model.answer(np.zeros((1, model.net.input_size)))["hidden"]]  # also compiles once
    info = {"input_size": model.net.input_size, "side": model.side, "box": list(model.frame.box),
            "pen": model.frame.pen, "centre": model.frame.centre,
            "classes": list(range(model.net.output_size)), "run": model.name, "hidden_sizes": hidden_sizes,
            "samples": None if samples is None else samples.source}
    limit = body_limit(model.net.input_size)

    def sample_answer(n):
        if samples is None:
            raise RequestError(404, "this model has no test images to show: it was not trained on a bundled "
                               "data set; start the playground with --data FILE.npz (arrays x and y)")
        with rng_lock:
            idx = rng.choice(samples.x.shape[0], size=min(n, samples.x.shape[0]), replace=False)
        out = model.answer(samples.x[idx])
        return {"images": samples.x[idx].tolist(), "labels": samples.y[idx].tolist(),
                "predictions": np.asarray(out["label"]).tolist(),
                "confidence": np.asarray(out["probabilities"]).max(axis=1).tolist()}

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "funcnn-playground"
        error_content_type = "application/json"
        error_message_format = '{"error": "%(code)d %(message)s"}'

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass  # one line per request would bury the one line that matters (the address)

        def send_error(self, code, message=None, explain=None):
            if code != 501:  # http.server's own 4xx (bad request line, headers too long): its JSON format
                return super().send_error(code, message, explain)
            # A method with no do_ handler is the client's mistake, so a 4xx, saying what is allowed.
            self.close_connection = True
            self._json(405, {"error": f"method {self.command[:20]!r} is not allowed; this server answers "
                             "GET, HEAD and POST"}, allow="GET, HEAD, POST")

        def _send(self, status: int, body: bytes, content_type: str, allow: str | None = None) -> None:
            self.send_response(status)
            if allow is not None:
                self.send_header("Allow", allow)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, doc, allow: str | None = None) -> None:
            self._send(status, json.dumps(doc).encode(), "application/json", allow)

        def _guarded(self, fn) -> None:
            try:
                fn()
            except RequestError as e:
                self.close_connection = True  # an unread body must not be taken for the next request
                self._json(e.status, {"error": str(e)})

        def do_GET(self):  # noqa: N802 - http.server's name
            self._guarded(self._get)

        def do_HEAD(self):  # noqa: N802
            self._guarded(self._get)

        def do_POST(self):  # noqa: N802
            self._guarded(self._post)

        def _get(self):
            url = _target(self.path)
            if url.path == "/api/model":
                return self._json(200, info)
            if url.path == "/api/samples":
                return self._json(200, sample_answer(_parse_n(url.query)))
            if url.path == "/api/predict":
                raise RequestError(405, "POST /api/predict with a JSON body {\"pixels\": [...]}")
            if url.path in STATIC:
                name, ctype = STATIC[url.path]
                body = importlib.resources.files("funcnn.app").joinpath("static", name).read_bytes()
                return self._send(200, body, ctype)
            raise RequestError(404, f"no such page: {url.path[:200]}; this server has {PAGES}")

        def _post(self):
            url = _target(self.path)
            if url.path != "/api/predict":
                raise RequestError(404 if url.path not in STATIC and not url.path.startswith("/api/") else 405,
                                   f"POST is only for /api/predict; got {url.path[:200]}")
            length = self.headers.get("Content-Length")
            if length is None:
                raise RequestError(411, "a Content-Length header is required")
            try:
                n = int(length)
            except ValueError:
                raise RequestError(400, f"Content-Length {length[:40]!r} is not a number") from None
            if n < 0:
                raise RequestError(400, f"Content-Length {n} is negative")
            if n > limit:
                raise RequestError(413, f"the body is {n} bytes; the limit is {limit}")
            pixels = parse_pixels(self.rfile.read(n), model.net.input_size)
            self._json(200, imagemodel.answer_one(model, pixels))

    return Handler


def make_server(model, samples=None, *, host: str = "127.0.0.1", port: int = 8765):
    """A ``ThreadingHTTPServer`` for the model, bound but not yet serving (port 0: a free one)."""
    server = http.server.ThreadingHTTPServer((host, port), make_handler(model, samples))
    server.daemon_threads = True
    return server


# ------------------------------------------------------------------------ the command


def cmd_playground(args) -> int:
    model = imagemodel.load(args.run)
    samples = load_samples(model, args.data)
    try:
        server = make_server(model, samples, host=args.host, port=args.port)
    except OSError as e:
        from funcnn.app.cli import UserError  # at call time: cli imports this module to register it

        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; "
                      "choose another --port (0 picks a free one).") from None
    host, port = server.server_address[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if args.host not in LOCAL_HOSTS:
        print(f"funcnn playground: warning: serving on {args.host}, so other machines can reach it; "
              "use the default 127.0.0.1 to keep it local.", file=sys.stderr)
    print(f"funcnn playground: {model.name} ({model.side}x{model.side} images, {model.net.output_size} classes) "
          f"at {url}  (Ctrl-C stops)", flush=True)
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("funcnn playground: stopped.", flush=True)
    finally:
        server.server_close()
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is an integer from 0 to 65535; got {text!r}")
    return port


def register(sub) -> None:
    """Adds ``funcnn playground`` to the CLI's subparsers."""
    p = sub.add_parser("playground", help="draw a digit in the browser and watch the network classify it",
                       description="Serve a local page where you draw an image and see the class "
                       "probabilities, the hidden activations and which pixels would change the answer "
                       "(d p / d x by the hand-derived backward pass). Needs a softmax classifier of "
                       "k x k images, e.g. a run of configs/digits.toml.")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (best.ckpt is used) or a .ckpt")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; anything else is reachable from the network and prints a warning)")
    p.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--data", metavar="FILE.npz", help="test images to show beside your drawing (arrays x in "
                   "[0, 1] and y), for a run not trained on a bundled data set")
    p.set_defaults(fn=cmd_playground)
