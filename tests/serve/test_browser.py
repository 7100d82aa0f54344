"""End to end in a real headless Chromium: draw digits stroke by stroke on the page, read its prediction.

Needs Debian's chromium (/usr/bin/chromium, or $CNNLAB_CHROMIUM) and the playwright package. Where either is
missing the test skips and says which, except in CI (CI=true), where .ci/run installs both and it must run.
"""

import contextlib
import math
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: the browser test must run in CI (.ci/run installs it)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(run_dir):
    """A real uvicorn server for the run's model on a free port of 127.0.0.1: its URL."""
    uvicorn = pytest.importorskip("uvicorn")
    from cnnlab.inference.predictor import Predictor
    from cnnlab.serve.app import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Predictor(run_dir)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start within 20 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_url(trained_resnet):
    with _serving(trained_resnet) as url:
        yield url


@contextlib.contextmanager
def _browser_page():
    _need(os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright package is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 900, "height": 700})
        finally:
            browser.close()


def _draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    page.click("#clear")
    for stroke in strokes:
        x0, y0 = stroke[0]
        page.mouse.move(box["x"] + x0, box["y"] + y0)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
        page.mouse.up()
    page.click("#predict")
    page.wait_for_function("document.body.dataset.prediction !== undefined && "
                           "!document.getElementById('status').textContent.startsWith('predicting')")


# Strokes on the 280 x 280 canvas, as a person would draw them: lists of (x, y) points.
def _ellipse(cx, cy, rx, ry, n=48):
    return [(cx + rx * math.sin(2 * math.pi * k / n), cy - ry * math.cos(2 * math.pi * k / n)) for k in range(n + 1)]


DIGITS = {
    "1": [[(150, 45), (140, 140), (135, 235)]],
    "7": [[(75, 60), (205, 60)], [(205, 60), (160, 145), (120, 235)]],
    "0": [_ellipse(140, 140, 55, 95)],
    "4": [[(170, 40), (80, 170), (215, 170)], [(170, 40), (170, 245)]],
}


def test_drawing_digits_on_the_page_gets_them_read(server_url, tmp_path):
    with _browser_page() as page:
        page.goto(server_url)
        page.wait_for_function("document.getElementById('model').textContent.includes('resnet')")
        assert page.inner_text("h1") == "Draw a digit"
        for digit, strokes in DIGITS.items():
            _draw(page, strokes)
            assert page.inner_text("#answer").strip() == digit, f"drew {digit}, the page says {page.inner_text('#answer')}"
            assert page.get_attribute("#seen", "src").startswith("data:image/png;base64,")
        shot = os.environ.get("CNNLAB_SCREENSHOT")
        if shot:
            page.screenshot(path=str(Path(shot)))


def test_a_model_of_named_classes_gets_named_bars_and_answers(fashion_named_run):
    """Mechanics (a model trained on noise, so which class wins is not checked): the page labels its bars
    with the model's class names, in order, and answers with the name of the class it marks best."""
    from cnnlab.data.fashion_mnist import SPEC as FASHION_MNIST

    run = fashion_named_run
    with _serving(run) as url, _browser_page() as page:
        page.goto(url)
        page.wait_for_function("document.getElementById('model').textContent.includes('Fashion-MNIST')")
        assert page.locator("#bars .label").all_inner_texts() == list(FASHION_MNIST.classes)
        assert page.inner_text("h1").startswith("Draw one of: T-shirt/top, Trouser")
        _draw(page, [[(90, 40), (190, 40), (190, 250), (90, 250), (90, 40)]])
        best = page.locator("#bars .bar.best .label").all_inner_texts()
        assert len(best) == 1 and page.inner_text("#answer").strip() == best[0]
