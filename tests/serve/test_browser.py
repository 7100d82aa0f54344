"""End to end in a real headless Chromium: draw on the page, look inside the models, switch parts off, train from the
page, read it in Chinese, at phone width, with the keyboard.

Needs Debian's chromium (/usr/bin/chromium, or $CNNLAB_CHROMIUM) and the playwright package. Where either is
missing the test skips and says which, except in CI (CI=true), where .ci/run installs both and it must run.

With CNNLAB_SCREENSHOTS=<dir>, the screenshots of the inside view (inside.png) and of the Chinese page
(inside-zh.png) are also written there; they always go to tmp_path. The ones under docs/img, which the READMEs show,
are taken by docs/screenshots.py from a served `make run`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from ..support.browser import chromium
from ..support.servers import live_server

pytestmark = pytest.mark.browser  # real_data and slow come with server_url's trained models (tests/conftest.py)

DESKTOP = {"width": 1200, "height": 900}


@contextlib.contextmanager
def _serving(runs, runs_root):
    """A real uvicorn server for `runs` (training into `runs_root`) on a free port of 127.0.0.1: its URL."""
    from cnnlab.serve.app import create_app

    with live_server(create_app(runs=[str(r) for r in runs], runs_root=str(runs_root))) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server_url(trained_inception, trained_resnet, tmp_path_factory):
    """inception_net and resnet served together; a training from the page writes its run beside them."""
    with _serving([trained_inception, trained_resnet], tmp_path_factory.mktemp("served_runs")) as url:
        yield url


class Browser:
    """One Chromium for a test; every request any of its pages makes is logged, to check that only the server
    that served the page is ever asked for anything."""

    def __init__(self, browser, origin: str) -> None:
        self.browser = browser
        self.origin = origin
        self.requests: list[str] = []
        self.errors: list[str] = []

    def page(self, locale: str = "en-US", viewport: dict = DESKTOP):
        context = self.browser.new_context(locale=locale, viewport=viewport)
        page = context.new_page()
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        return page

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not (u.startswith(self.origin + "/") or u.startswith("data:") or u == self.origin)]


@contextlib.contextmanager
def _browser(origin: str):
    with chromium() as launched:
        browser = Browser(launched, origin)
        yield browser
    # every test checks these: no script error, and no request to another host (no CDN, no web font)
    assert not browser.errors, browser.errors
    assert browser.requests, "the page made no request at all"
    assert not browser.foreign_requests(), browser.foreign_requests()


def _api(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.load(res)


def _served(url: str, model: str) -> dict:
    """/api/model's entry of the served model `model` (inception_net, resnet)."""
    entries = [m for m in _api(url, "/api/model")["models"] if m["model"] == model]
    assert entries, f"{model} is not served"
    return entries[0]


# Strokes on the 280 x 280 pad, as a person would draw them: lists of (x, y) points.
def _ellipse(cx, cy, rx, ry, n=48):
    return [(cx + rx * math.sin(2 * math.pi * k / n), cy - ry * math.cos(2 * math.pi * k / n)) for k in range(n + 1)]


DIGITS = {
    "1": [[(150, 45), (140, 140), (135, 235)]],
    "7": [[(75, 60), (205, 60)], [(205, 60), (160, 145), (120, 235)]],
    "0": [_ellipse(140, 140, 55, 95)],
    "4": [[(170, 40), (80, 170), (215, 170)], [(170, 40), (170, 245)]],
}

SETTLED = "document.body.dataset.prediction !== undefined && !document.body.dataset.busy"


def _open(page, url: str, model: str | None = None) -> None:
    page.goto(url)
    page.wait_for_function("document.getElementById('model').options.length > 0 && document.body.dataset.model")
    if model is not None:
        page.select_option("#model", _served(url, model)["id"])


def _draw(page, strokes) -> None:
    """Clear the pad, draw the strokes with the mouse (the pad may be shown smaller than 280 px), and wait for the
    page's answer to the finished drawing."""
    page.click("#clear")
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        x0, y0 = stroke[0]
        page.mouse.move(box["x"] + x0 * scale, box["y"] + y0 * scale)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=6)
        page.mouse.up()
    page.wait_for_function(SETTLED)


def _shown_probabilities(page) -> list[float]:
    return [float(p) for p in page.eval_on_selector_all("#bars .bar", "bars => bars.map(b => b.dataset.p)")]


@contextlib.contextmanager
def _requests(page):
    """The requests the page makes within the context."""
    requests = []

    def log(request):
        requests.append(request)

    page.on("request", log)
    try:
        yield requests
    finally:
        page.remove_listener("request", log)


def _last_explain_request(requests: list) -> dict:
    bodies = [json.loads(r.post_data) for r in requests if r.url.endswith("/api/explain")]
    assert bodies, "the page sent no /api/explain request"
    return bodies[-1]


def _switch_off_and_compare(page, url: str, part: str) -> dict:
    """Press the switch of `part` and check the page then shows exactly the probabilities /api/explain gives for the
    same picture with that part silenced; returns that answer."""
    with _requests(page) as requests:
        page.click(f'#inside [data-part="{part}"]')
        page.wait_for_function(f"document.getElementById('inside').dataset.silenced === {json.dumps(part)} && "
                               "!document.body.dataset.busy")
    assert page.get_attribute(f'#inside [data-part="{part}"]', "aria-pressed") == "true"
    sent = _last_explain_request(requests)
    assert sent["silence"] == [part]
    answer = _api(url, "/api/explain", sent)
    assert answer["silenced"] == [part]
    shown = _shown_probabilities(page)
    assert shown == pytest.approx(answer["probabilities"], abs=1e-6)
    # and the page says how each moved: a ghost bar at the probability with every part on, and the change
    ghosts = page.eval_on_selector_all("#bars .ghost", "gs => gs.map(g => parseFloat(g.style.width))")
    assert ghosts == pytest.approx([100 * p for p in answer["probabilities_full"]], abs=1e-3)
    moved = max(range(len(shown)), key=lambda i: abs(shown[i] - answer["probabilities_full"][i]))
    change = 100 * (shown[moved] - answer["probabilities_full"][moved])
    delta = page.inner_text(f'#bars .bar[data-class="{moved}"] .delta')
    size = f"{abs(change):.1f}"
    assert delta == (size if size == "0.0" else f"{'+' if change > 0 else '−'}{size}")
    return answer


def _count_cards(page, url: str, model: str) -> None:
    """One card per stage or block of /api/explain's answer, with its maps drawn; an Inception block's four branches
    and a residual block's skip, conv path and sum each with maps."""
    with _requests(page) as requests:
        _draw(page, DIGITS["7"])
    answer = _api(url, "/api/explain", _last_explain_request(requests))
    layers = answer["layers"]
    assert page.locator("#inside .layer").count() == len(layers)
    assert page.eval_on_selector_all("#inside .layer", "ls => ls.map(l => l.dataset.layer)") == [l["name"] for l in layers]
    for layer in layers:
        card = page.locator(f'#inside .layer[data-layer="{layer["name"]}"]')
        parts = layer.get("branches") or layer.get("paths") or []
        if parts:
            assert card.locator(".part").count() == len(parts)
        # a block is shown as its parts and what joins them (an Inception block's branches side by side, then
        # their concatenation; a residual block's skip, conv path and sum); every other stage as its own maps. Each
        # is on the page as a loaded image.
        drawn = [p for p in parts if p.get("maps")] if parts else [layer] if layer.get("maps") else []
        if layer["kind"] == "inception":
            drawn.append(layer)
        images = card.locator("img.maps")
        assert images.count() == len(drawn), layer["name"]
        for i in range(images.count()):
            assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0"), layer["name"]
    kinds = {l["kind"] for l in layers}
    assert {"inception" if model == "inception_net" else "residual"} <= kinds
    assert page.get_attribute("#inside .seen img", "src").startswith("data:image/png;base64,")
    assert page.inner_text("#answer").strip() == "7"


def _screenshot(page, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CNNLAB_SCREENSHOTS"):
        target = Path(os.environ["CNNLAB_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
    return path


# ---- the tests ----------------------------------------------------------------------------------------------

def test_drawing_digits_on_the_page_gets_them_read(server_url):
    with _browser(server_url) as browser:
        page = browser.page()
        _open(page, server_url, "resnet")
        for digit, strokes in DIGITS.items():
            _draw(page, strokes)
            assert page.inner_text("#answer").strip() == digit, f"drew {digit}, the page says {page.inner_text('#answer')}"
            # a screen reader hears the answer once the stroke ends, from a polite live region
            assert f"says {digit} (" in page.inner_text("#spoken")
        assert page.get_attribute("#spoken", "aria-live") == "polite"


def test_an_uploaded_image_gets_the_answer_the_api_gives_it(server_url, real_mnist, tmp_path):
    """An MNIST test digit saved as a PNG (white on black, as MNIST is) and uploaded: the page answers what
    /api/explain answers for the same file."""
    import base64

    from PIL import Image

    path = tmp_path / "digit.png"
    Image.fromarray(real_mnist.test_images[0].numpy()).resize((112, 112), Image.NEAREST).save(path)
    url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    with _browser(server_url) as browser:
        page = browser.page()
        _open(page, server_url, "resnet")
        page.set_input_files("#upload", str(path))
        page.wait_for_function(SETTLED)
        expected = _api(server_url, "/api/explain", {"image": url, "model": _served(server_url, "resnet")["id"]})
        assert _shown_probabilities(page) == pytest.approx(expected["probabilities"], abs=1e-6)
        assert page.inner_text("#answer").strip() == expected["classes"][expected["top"]]


def test_the_page_shows_every_layer_and_block_of_both_models(server_url):
    with _browser(server_url) as browser:
        page = browser.page()
        _open(page, server_url)
        # before anything is drawn: no image element without a picture (a broken-image placeholder)
        assert page.eval_on_selector_all("img", "imgs => imgs.filter(i => !i.getAttribute('src')).length") == 0
        for model in ("inception_net", "resnet"):
            page.select_option("#model", _served(server_url, model)["id"])
            _count_cards(page, server_url, model)
        # side by side: every served model's answer to the same drawing
        page.click("#compare")
        assert page.get_attribute("#compare", "aria-pressed") == "true"
        served = _api(server_url, "/api/model")["models"]
        page.wait_for_function("[...document.querySelectorAll('#compare-list .compare-card .big')]"
                               ".every(b => b.textContent !== '·')")
        cards = page.eval_on_selector_all("#compare-list .compare-card", "cs => cs.map(c => [c.dataset.model, c.querySelector('.big').textContent])")
        assert sorted(id for id, _ in cards) == sorted(m["id"] for m in served)
        assert all(answer == "7" for _, answer in cards), cards


def test_switching_a_branch_and_a_skip_off_changes_the_answer_as_the_api_says(server_url, tmp_path):
    with _browser(server_url) as browser:
        page = browser.page()
        _open(page, server_url, "inception_net")
        _draw(page, DIGITS["7"])
        before = _shown_probabilities(page)
        answer = _switch_off_and_compare(page, server_url, "incep1.5x5")
        assert answer["probabilities_full"] == pytest.approx(before, abs=1e-6)
        _screenshot(page, "inside.png", tmp_path)
        # reset turns every part back on
        page.click("#reset")
        page.wait_for_function("document.getElementById('inside').dataset.silenced === '' && !document.body.dataset.busy")
        assert _shown_probabilities(page) == pytest.approx(before, abs=1e-6)
        assert page.get_attribute('#inside [data-part="incep1.5x5"]', "aria-pressed") == "false"

        page.select_option("#model", _served(server_url, "resnet")["id"])
        _draw(page, DIGITS["7"])
        _switch_off_and_compare(page, server_url, "rblock2.skip")


def test_a_branch_switch_is_reached_with_tab_and_pressed_with_space(server_url):
    with _browser(server_url) as browser:
        page = browser.page()
        _open(page, server_url, "inception_net")
        _draw(page, DIGITS["4"])
        page.locator("#model").focus()
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.dataset.part"):
                break
        part = page.evaluate("document.activeElement.dataset.part")
        assert part == "incep1.1x1", "Tab does not reach the first branch switch"
        assert page.evaluate("document.activeElement.getAttribute('aria-label')").startswith("Switch off branch 1x1 of incep1")
        page.keyboard.press("Space")
        page.wait_for_function("document.getElementById('inside').dataset.silenced === 'incep1.1x1' && !document.body.dataset.busy")
        # the switch kept its focus through the update, so Space again turns it back on
        assert page.evaluate("document.activeElement.dataset.part") == "incep1.1x1"
        assert page.evaluate("document.activeElement.getAttribute('aria-pressed')") == "true"
        page.keyboard.press("Space")
        page.wait_for_function("document.getElementById('inside').dataset.silenced === '' && !document.body.dataset.busy")


def test_a_chinese_browser_gets_the_page_in_chinese_and_the_switch_goes_back(server_url, tmp_path):
    with _browser(server_url) as browser:
        page = browser.page(locale="zh-CN")
        _open(page, server_url, "inception_net")
        assert page.get_attribute("html", "lang") == "zh-CN"
        assert "卷积神经网络" in page.inner_text("h1")
        assert page.inner_text("#tab-train") == "训练"
        _draw(page, DIGITS["7"])
        _switch_off_and_compare(page, server_url, "incep1.5x5")
        assert "Inception 块" in page.inner_text("#inside")
        assert "分支" in page.inner_text("#inside")
        _screenshot(page, "inside-zh.png", tmp_path)

        page.click("#lang")
        assert page.get_attribute("html", "lang") == "en"
        assert page.inner_text("h1") == "See inside a CNN"
        assert "Inception block" in page.inner_text("#inside")
        page.reload()  # the choice is kept
        page.wait_for_function("document.body.dataset.model")
        assert page.inner_text("h1") == "See inside a CNN"


def test_at_phone_width_nothing_scrolls_sideways(server_url):
    with _browser(server_url) as browser:
        page = browser.page(viewport={"width": 375, "height": 740})
        _open(page, server_url, "inception_net")
        _draw(page, DIGITS["7"])
        page.click('#inside [data-part="incep2.pool"]')
        page.wait_for_function("document.getElementById('inside').dataset.silenced === 'incep2.pool' && !document.body.dataset.busy")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.click("#compare")
        page.click("#tab-train")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375


@pytest.mark.processes  # the server's training child, on the real MNIST
@pytest.mark.real_data
def test_training_from_the_page_draws_its_curve_and_serves_the_new_model(server_url):
    before = {m["id"] for m in _api(server_url, "/api/model")["models"]}
    with _browser(server_url) as browser:
        page, other = browser.page(), browser.page()  # a second visitor, whose page opened before the training
        for p in (page, other):
            _open(p, server_url)
            p.click("#tab-train")
        page.select_option("#train-model", "basic_cnn")
        page.fill("#train-budget", "15")
        page.click("#train-start")
        # the loss curve grows while it trains: points drawn on the canvas, counted in its data-points
        page.wait_for_function("Number(document.getElementById('train-chart').dataset.points) >= 2", timeout=120_000)
        assert page.evaluate("document.getElementById('train-progress').value") > 0
        assert page.is_disabled("#train-start") and page.is_enabled("#train-stop")
        # the other page's start is refused (409) with the server's reason, and it follows the training instead
        other.click("#train-start")
        other.wait_for_function("document.getElementById('train-note').textContent.includes('already running')")
        other.wait_for_function("Number(document.getElementById('train-chart').dataset.points) >= 1", timeout=60_000)

        page.wait_for_function("document.getElementById('train').dataset.state === 'done'", timeout=180_000)
        assert page.evaluate("document.getElementById('train-progress').value") == 1
        assert int(page.get_attribute("#train-chart", "data-epochs")) >= 1
        after = {m["id"]: m for m in _api(server_url, "/api/model")["models"]}
        new = [i for i in after if i not in before]
        assert len(new) == 1 and after[new[0]]["model"] == "basic_cnn"
        # the new model is in the picker, and chosen
        page.wait_for_function(f"document.getElementById('model').value === {json.dumps(new[0])}")
        assert page.inner_text("#train-status").startswith("Done"), page.inner_text("#train-status")
        page.click("#tab-explore")
        _draw(page, DIGITS["1"])
        assert page.inner_text("#inside-title") == "Inside basic_cnn"
        assert page.locator("#inside .layer").count() >= 3  # conv1, conv2, fc


@pytest.mark.processes  # the server's training child, on the real MNIST
@pytest.mark.real_data
def test_stop_on_the_page_keeps_what_was_trained(server_url):
    before = {m["id"] for m in _api(server_url, "/api/model")["models"]}
    with _browser(server_url) as browser:
        page = browser.page()
        _open(page, server_url)
        page.click("#tab-train")
        page.select_option("#train-model", "resnet")
        page.fill("#train-budget", "300")
        page.click("#train-start")
        page.wait_for_function("Number(document.getElementById('train-chart').dataset.points) >= 1", timeout=120_000)
        page.click("#train-stop")
        page.wait_for_function("document.getElementById('train').dataset.state === 'stopped'", timeout=120_000)
        assert page.inner_text("#train-status").startswith("Stopped"), page.inner_text("#train-status")
        new = [m for m in _api(server_url, "/api/model")["models"] if m["id"] not in before]
        assert [m["model"] for m in new] == ["resnet"]
        assert page.input_value("#model") == new[0]["id"]
        assert page.is_enabled("#train-start") and page.is_disabled("#train-stop")


def test_a_model_of_named_classes_gets_named_bars_and_answers(fashion_named_run, tmp_path):
    """Mechanics (a model trained on noise, so which class wins is not checked): the page labels its bars
    with the model's class names, in order, and answers with the name of the class it marks best."""
    from cnnlab.data.sets.fashion_mnist import SPEC as FASHION_MNIST

    with _serving([fashion_named_run], tmp_path / "runs") as url, _browser(url) as browser:
        page = browser.page()
        _open(page, url)
        assert page.locator("#bars .label").all_inner_texts() == list(FASHION_MNIST.classes)
        assert page.inner_text("#confidence").startswith("Draw something")
        _draw(page, [[(90, 40), (190, 40), (190, 250), (90, 250), (90, 40)]])
        best = page.locator("#bars .bar.best .label").all_inner_texts()
        assert len(best) == 1 and page.inner_text("#answer").strip() == best[0]


def test_with_no_model_served_the_page_opens_ready_to_train(tmp_path):
    with _serving([], tmp_path / "empty") as url, _browser(url) as browser:
        page = browser.page()
        page.goto(url)
        page.wait_for_function("document.getElementById('train-model').options.length > 0")
        assert page.is_visible("#train") and not page.is_visible("#explore")
        assert page.get_attribute("#tab-train", "aria-selected") == "true"
        assert page.inner_text("#train-note").startswith("No model is served yet")
