"""The page's layout in a real Chromium: "All models side by side" brings its results into view, and on a phone the
model picker shows its whole label and the inside view starts about a screen below the pad."""

from __future__ import annotations

import pytest

from ..support.browser import chromium
from ..support.data import synthetic_mnist
from ..support.servers import live_server
from .test_browser import DIGITS, _draw

pytest.importorskip("fastapi")
pytestmark = pytest.mark.browser

PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
INSIDE_WITHIN = 1.2  # screens from the top of the page to the inside view on a phone, a digit drawn


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """inception_net (the longest label of the lecture's models, and the default: it has parts) and resnet, each
    trained for two steps on noise: for the layout, never for what they answer."""
    from cnnlab.serve.app import create_app
    from cnnlab.train import fit, make_config

    root = tmp_path_factory.mktemp("layout_runs")
    for model in ("inception_net", "resnet"):
        cfg = make_config(model, steps=2, batch_size=50, val_size=50, device="cpu")
        fit(cfg, synthetic_mnist(train=200, test=50, seed=0), out_root=root, progress=False)
    with live_server(create_app(runs_root=root)) as port:
        yield f"http://127.0.0.1:{port}"


def _open(browser, url: str, viewport: dict, locale: str = "en-US", reduced_motion: str = "no-preference"):
    page = browser.new_context(viewport=viewport, locale=locale, reduced_motion=reduced_motion).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.getElementById('model').options.length > 0 && document.body.dataset.model")
    return page, errors


BOX = "(() => { const r = document.getElementById('compare-box').getBoundingClientRect(); return [r.top, r.bottom, innerHeight]; })()"


@pytest.mark.parametrize("motion", ["no-preference", "reduce"])
def test_side_by_side_brings_its_results_into_view(url, motion):
    with chromium() as browser:
        page, errors = _open(browser, url, DESKTOP, reduced_motion=motion)
        _draw(page, DIGITS["7"])
        page.evaluate("window.scrollTo(0, 0)")
        page.click("#compare")
        if motion == "reduce":  # no animation: in view at the next frame
            page.evaluate("new Promise(r => requestAnimationFrame(() => r()))")
        else:  # a smooth scroll: in view once it has ended
            page.wait_for_function(f"(([top, bottom, height]) => bottom <= height)({BOX})", timeout=10_000)
        top, bottom, height = page.evaluate(BOX)
        scrolled = page.evaluate("scrollY")
        assert scrolled > 0, "the page did not scroll"
        # at the top of the page the results were below the fold (else this test shows nothing)
        assert bottom + scrolled > height, (bottom, scrolled, height)
        assert 0 <= top < height and bottom <= height, (top, bottom, height)
        assert page.locator("#compare-list .compare-card").count() == 2
        assert not errors, errors


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_on_a_phone_the_picker_fits_and_the_inside_view_is_near(url, locale):
    with chromium() as browser:
        page, errors = _open(browser, url, PHONE, locale=locale)
        picker = page.evaluate("""() => {
            const select = document.getElementById("model"), style = getComputedStyle(select);
            const ctx = document.createElement("canvas").getContext("2d");
            ctx.font = style.font;
            const text = ctx.measureText(select.selectedOptions[0].text).width;
            // the label, its padding and the drop-down arrow (about 20 px in Chromium) within the select's width
            return { right: select.getBoundingClientRect().right, need: text + parseFloat(style.paddingLeft)
                     + parseFloat(style.paddingRight) + 20, width: select.clientWidth, label: select.selectedOptions[0].text };
        }""")
        assert picker["label"].startswith("inception_net · ")
        assert picker["right"] <= PHONE["width"], picker
        assert picker["need"] <= picker["width"], f"the picker cuts its label: {picker}"

        _draw(page, DIGITS["7"])
        inside = page.evaluate("document.getElementById('inside').getBoundingClientRect().top + scrollY")
        pad = page.evaluate("document.getElementById('pad').getBoundingClientRect().bottom + scrollY")
        assert inside < INSIDE_WITHIN * PHONE["height"], (f"the inside view starts {inside / PHONE['height']:.2f} "
                                                        f"screens down (the pad ends at {pad:.0f} px)")
        assert page.locator("#inside .layer").count() > 3  # and it is there, drawn
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert not errors, errors
