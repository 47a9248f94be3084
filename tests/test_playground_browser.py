"""The playground page in a real browser: Debian's headless Chromium driven by selenium.

One browser session for the module. The page's downsampling of known strokes
equals a NumPy reference of how the training images were framed (8x8 digits:
bounding box; a 28x28 model: MNIST's 20x20 box and centre of mass). Then a
stroke drawn with pointer events: the pixels sent are that reference's, the
input canvas shows them, the label shown equals the API's answer for them,
the bars, hidden strips and the test-image grid appear, Clear empties the
pad, and the console has no errors; saves a screenshot (``FUNCNN_SCREENSHOT=path`` to keep it;
``FUNCNN_PLAYGROUND_RUN=run_dir`` serves that run instead of the tiny test run:
that is how ``docs/playground.png`` is made, see the README).

Skipped, with the reason, where Chromium, chromedriver or selenium is missing,
except under CI (``CI=true``), where that is a failure: ``.ci/run`` installs them.
"""
import http.client
import itertools
import json
import math
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from app_helpers import digits_run

from funcnn.app import imagemodel, playground

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "Chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
    return None


def _serve(path):
    """Serves the run or checkpoint at ``path`` on a free port: (url, run name, stop)."""
    model = imagemodel.load(path)
    srv = playground.make_server(model, playground.load_samples(model, None), port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]

    def stop():
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)

    return f"http://{host}:{port}/", model.name, stop


@pytest.fixture(scope="module")
def available():
    why = _missing()
    if why is not None:
        if IN_CI:
            pytest.fail(f"the browser test must run in CI, but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def served(available):
    url, name, stop = _serve(os.environ.get("FUNCNN_PLAYGROUND_RUN") or digits_run())
    yield url, name
    stop()


@pytest.fixture(scope="module")
def served_mnist(available, tmp_path_factory):
    """An untrained 784-16-10 softmax classifier: the page frames its drawings like MNIST's 28x28 digits."""
    import jax
    import jax.numpy as jnp

    import funcnn
    from funcnn import checkpoint, train

    net, key = funcnn.mlp([784, 16, 10]), jax.random.key(0)
    path = tmp_path_factory.mktemp("mnist-shaped") / "mnist-shaped.ckpt"
    checkpoint.save(path, train.TrainState(net.init(key), (), jnp.zeros((), jnp.int32), key), spec=net.spec)
    url, name, stop = _serve(path)
    yield url, name
    stop()


@pytest.fixture(scope="module")
def browser(served, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # No network here: every flag below stops Chromium calling home (and logging the refusals).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1240,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, js: str, what: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(js)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _api_label(url: str, pixels) -> int:
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/api/predict", json.dumps({"pixels": pixels}), {"Content-Type": "application/json"})
    r = conn.getresponse()
    doc = json.loads(r.read())
    conn.close()
    assert r.status == 200, doc
    return doc["label"]


# ---------------------------------------------------------------- the downsampling, against NumPy

PAD = 280  # the drawing pad's side in its own pixels (index.html)
# Strokes in pad pixels: a "7" (lopsided: its ink's centre of mass is far from its box's centre), a ring,
# a dot, and two strokes (a "+" whose arms differ in length).
STROKES = {
    "seven": [[[60, 50], [220, 50], [130, 250]]],
    "ring": [[[140 + 50 * math.sin(2 * math.pi * i / 24), 140 - 90 * math.cos(2 * math.pi * i / 24)]
              for i in range(25)]],
    "dot": [[[100, 120]]],
    "plus": [[[40, 140], [240, 140]], [[180, 60], [180, 180]]],
}


def _ink(strokes, side, pen, scale, shift, sub=8):
    """Area averages ``[side, side]`` of the strokes mapped by p -> scale p + shift, drawn with round caps
    and joins ``pen`` image pixels wide: a sample point is ink when it is within pen/2 of a segment."""
    grid = (np.arange(side * sub) + 0.5) / sub  # sample points, sub x sub per image pixel
    px, py = np.meshgrid(grid, grid)  # [S, S] each; px is the column (x), py the row (y)
    inside = np.zeros(px.shape, bool)
    for line in strokes:
        pts = np.asarray(line, np.float64) * scale + shift  # [m, 2] in image pixels
        for a, b in zip(pts, pts[1:] if len(pts) > 1 else pts, strict=False):
            ab = b - a
            t = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1]) / max(ab @ ab, 1e-12), 0, 1)
            inside |= (px - a[0] - t * ab[0]) ** 2 + (py - a[1] - t * ab[1]) ** 2 <= (pen / 2) ** 2
    return inside.reshape(side, sub, side, sub).mean(axis=(1, 3))


def reference_downsample(strokes, side, box, pen, centre):
    """The framing of the training images, written plainly: scale the strokes' bounding box (aspect kept,
    at least PAD/8 on each side) so the ink fits ``box``, put its centre at the image's, and for MNIST-style
    frames move the ink's centre of mass (pixel i spans [i, i + 1)) to the image's centre."""
    pts = np.concatenate([np.asarray(line, np.float64) for line in strokes])
    lo, hi = pts.min(axis=0), pts.max(axis=0)  # [x, y]
    extent = np.maximum(hi - lo, PAD / 8)
    scale = min((box[0] - pen) / extent[1], (box[1] - pen) / extent[0])
    shift = side / 2 - scale * (lo + hi) / 2
    img = _ink(strokes, side, pen, scale, shift)
    if centre == "mass":
        c = np.arange(side) + 0.5
        com = np.array([(img.sum(axis=0) * c).sum(), (img.sum(axis=1) * c).sum()]) / img.sum()  # [x, y]
        img = _ink(strokes, side, pen, scale, shift + side / 2 - com)
    return img


def _open(driver, url):
    driver.get(url)
    _wait(driver, "return document.body.dataset.state === 'ready'", "the page to load the model")
    return driver.execute_script("return window.funcnnPlayground.model;")


@pytest.mark.parametrize("which", ["digits 8x8", "MNIST 28x28"])
def test_the_page_downsamples_like_the_training_data(browser, served, served_mnist, which):
    url, _ = served if which == "digits 8x8" else served_mnist
    model = _open(browser, url)
    k = model["side"]
    assert (k, model["centre"]) == ((8, "box") if which == "digits 8x8" else (28, "mass"))
    for name, strokes in STROKES.items():
        got = np.asarray(browser.execute_script("return window.funcnnPlayground.downsample(arguments[0]);",
                                                strokes)).reshape(k, k)
        want = reference_downsample(strokes, k, model["box"], model["pen"], model["centre"])
        # The canvas antialiases at 4x4 samples per pixel, the reference counts 8x8: edges differ a little.
        assert np.abs(got - want).max() < 0.15 and np.abs(got - want).mean() < 0.01, (name, np.abs(got - want).max())
        if model["centre"] == "mass":  # MNIST: the ink's centre of mass is the image's centre
            c = np.arange(k) + 0.5
            com = [(got.sum(axis=0) * c).sum() / got.sum(), (got.sum(axis=1) * c).sum() / got.sum()]
            np.testing.assert_allclose(com, [k / 2, k / 2], atol=0.1, err_msg=name)
    rows = np.flatnonzero(np.asarray(browser.execute_script(
        "return window.funcnnPlayground.downsample(arguments[0]);", STROKES["seven"])).reshape(k, k).max(axis=1) > 0.3)
    assert rows[-1] - rows[0] + 1 == pytest.approx(model["box"][0], abs=1.5)  # the tall "7" fills the box's height


def test_drawing_a_stroke_shows_the_apis_answer(browser, served, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, run_name = served
    browser.get(url)
    _wait(browser, "return document.body.dataset.state === 'ready'", "the page to load the model")
    assert f"run {run_name}:" in browser.find_element(By.ID, "model-info").text
    pad = browser.find_element(By.ID, "pad")
    # A "0": an ellipse 110 x 190 pad pixels around the centre, drawn with pointer events.
    chain = ActionChains(browser, duration=10)
    ring = [(round(55 * math.sin(2 * math.pi * i / 24)), round(-95 * math.cos(2 * math.pi * i / 24)))
            for i in range(25)]
    chain.move_to_element_with_offset(pad, *ring[0]).click_and_hold()
    for (x0, y0), (x1, y1) in itertools.pairwise(ring):
        chain.move_by_offset(x1 - x0, y1 - y0)
    chain.release().perform()
    done = ("const s = window.funcnnPlayground; return !s.drawing && !s.scheduled && s.requests > 0 "
            "&& s.answered === s.requests && document.body.dataset.state === 'answered';")
    _wait(browser, done, "the answer to the last drawing")
    pixels = browser.execute_script("return window.funcnnPlayground.pixels;")
    assert len(pixels) == 64 and all(0 <= p <= 1 for p in pixels) and max(pixels) > 0.5
    assert max(pixels[27:29] + pixels[35:37]) < max(pixels) / 2  # the ring's hole stays dark at the centre
    model = browser.execute_script("return window.funcnnPlayground.model;")
    strokes = browser.execute_script("return window.funcnnPlayground.strokes;")  # the pointer events' points
    want = reference_downsample(strokes, 8, model["box"], model["pen"], model["centre"]).ravel()
    assert np.abs(np.asarray(pixels) - want).max() < 0.15  # what was sent is the drawing, framed as the data
    shown_input = browser.execute_script(
        "const c = document.getElementById('input'); return Array.from(c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0));")
    np.testing.assert_allclose(shown_input, 255 * np.asarray(pixels), atol=1)  # shown at the model's resolution
    shown = browser.find_element(By.ID, "label").text
    assert shown == str(_api_label(url, pixels))
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert len(bars) == 10
    top = [b for b in bars if "top" in b.get_attribute("class").split()]
    assert [t.find_element(By.CSS_SELECTOR, ".cls").text for t in top] == [shown]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hidden .layer canvas")) == 1
    assert " units (min " in browser.find_element(By.CSS_SELECTOR, "#hidden .layer .name").text

    browser.find_element(By.ID, "samples-button").click()
    _wait(browser, "return document.querySelectorAll('#samples .sample').length === 24", "24 test images")
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None  # no error toast

    shot = Path(os.environ.get("FUNCNN_SCREENSHOT") or tmp_path / "playground.png")
    browser.execute_script("window.scrollTo(0, 0);")
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    browser.find_element(By.ID, "clear").click()  # back to an empty pad
    assert browser.find_element(By.ID, "label").text == "\u2013"
    assert browser.execute_script("return window.funcnnPlayground.strokes.length;") == 0

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
