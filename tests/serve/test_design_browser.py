"""The designer on the Train tab, in a real headless Chromium: the cost it shows is the built network's as the form
changes, a bad design is said in the reader's language, and a design trained from the page is served, explorable,
and drawn beside the lecture's network on one chart.

Needs Debian's chromium and the playwright package (tests/support/browser.py: skipped without them, except in CI)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import urllib.request

import pytest
from PIL import Image

from cnnlab.analysis.cost import cost_rows
from cnnlab.models import count_parameters, create_model
from cnnlab.serve.training import BUDGET

from ..support.browser import chromium
from ..support.servers import live_server

pytestmark = pytest.mark.browser

STATE = "document.getElementById('designer').dataset.state"
SPEC = "document.getElementById('designer').dataset.spec"


@contextlib.contextmanager
def _page(tmp_path, locale: str = "en-US", width: int = 1200):
    """The page of a server with nothing served yet (training into tmp_path/runs), on its Train tab; no script error
    may happen on it."""
    from cnnlab.serve.app import create_app

    errors: list[str] = []
    with live_server(create_app(runs_root=tmp_path / "runs")) as port, chromium() as browser:
        url = f"http://127.0.0.1:{port}"
        page = browser.new_context(locale=locale, viewport={"width": width, "height": 1000}).new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.click("#tab-train")
        page.wait_for_function(f"{STATE} === 'ok'")
        yield page, url
    assert not errors, errors


def _settled(page, spec: str, state: str = "ok") -> None:
    """Wait for the designer's answer to the form as it now is."""
    page.wait_for_function(f"{SPEC} === {json.dumps(spec)} && {STATE} === {json.dumps(state)} "
                           "&& !document.getElementById('designer').dataset.busy")


def _value(page, selector: str) -> int:
    return int(page.get_attribute(selector, "data-value"))


def test_the_cost_shown_is_the_built_networks_as_the_form_changes(tmp_path):
    with _page(tmp_path) as (page, _):
        lecture = count_parameters(create_model("inception_net"))
        assert _value(page, "#design-params") == _value(page, "#design-lecture-params") == lecture == 97_298
        assert page.inner_text("#design-params") == "97,298"

        page.fill("#design-width-5x5", "8")
        spec = "inception:1x1=16,5x5=16>8,3x3dbl=16>24>24,pool=24"
        _settled(page, spec)
        assert page.inner_text("#design-spec") == spec
        assert _value(page, "#design-params") == count_parameters(create_model("designed", block=spec))

        page.uncheck("#design-reduce-on-5x5")  # the 5x5 convolves the block's input directly
        spec = "inception:1x1=16,5x5=8,3x3dbl=16>24>24,pool=24"
        _settled(page, spec)
        assert page.is_disabled("#design-reduce-5x5")
        network = create_model("designed", block=spec)
        assert _value(page, "#design-params") == count_parameters(network)
        branch_macs = sum(r.macs for r in cost_rows(network) if r.kind == "branch" and r.name.endswith(".5x5"))
        assert _value(page, "#design-parts tr[data-part='5x5'] td.num") == branch_macs

        for branch in ("1x1", "3x3dbl", "pool"):
            page.uncheck(f"#design-use-{branch}")
        _settled(page, "inception:5x5=8")  # one branch alone
        assert page.locator("#design-parts tbody tr").count() == 4  # beside the lecture's four
        assert _value(page, "#design-params") == count_parameters(create_model("designed", block="inception:5x5=8"))

        page.uncheck("#design-use-5x5")
        _settled(page, "inception:5x5=8", state="error")  # the last design that could be built stays, greyed
        assert page.inner_text("#design-error") == "choose at least one branch (1x1, 5x5, 3x3dbl, pool)"
        assert page.is_disabled("#design-train")
        page.click("#lang")
        assert page.inner_text("#design-error") == "至少要选一条分支（1x1, 5x5, 3x3dbl, pool）"

        page.check("#design-kind-residual")
        _settled(page, "residual:16,skip")
        assert page.is_enabled("#design-train") and page.is_hidden("#design-inception")
        assert _value(page, "#design-params") == _value(page, "#design-lecture-params") == 41_514
        page.uncheck("#design-res-skip")
        _settled(page, "residual:16,noskip")
        assert _value(page, "#design-params") == 41_514  # the same convolutions, without the sum
        page.fill("#design-res-width", "99")
        page.wait_for_function(f"{STATE} === 'error'")
        assert page.inner_text("#design-error") == "residual：“99”不是有效的通道数，请填 1 到 64 之间的整数"


def test_at_phone_width_the_designer_fits(tmp_path):
    with _page(tmp_path, locale="zh-CN", width=375) as (page, _):
        assert page.evaluate("document.documentElement.scrollWidth") <= 375


def _api(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.load(res)


def _digit_data_url() -> str:
    img = Image.new("L", (140, 140), 255)
    img.paste(0, (60, 20, 80, 120))  # a 1, dark on white as the page draws it
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _trained(page) -> None:
    """Wait for the training the page just started to be served."""
    page.wait_for_function("document.getElementById('train').dataset.state === 'running'", timeout=30_000)
    page.wait_for_function("['done', 'stopped', 'failed'].includes(document.getElementById('train').dataset.state)",
                           timeout=240_000)
    assert page.get_attribute("#train", "data-state") == "done", page.inner_text("#train-status")


@pytest.mark.slow
@pytest.mark.processes  # the server's training children, on the real MNIST
@pytest.mark.real_data
def test_a_design_trained_from_the_page_is_served_explorable_and_drawn_beside_the_lecture_network(tmp_path):
    spec = "inception:1x1=4,5x5=4>8"
    with _page(tmp_path) as (page, url):
        for branch in ("3x3dbl", "pool"):
            page.uncheck(f"#design-use-{branch}")
        page.fill("#design-width-1x1", "4")
        page.fill("#design-reduce-5x5", "4")
        page.fill("#design-width-5x5", "8")
        _settled(page, spec)
        page.fill("#train-budget", str(BUDGET[0]))  # the shortest training the page allows
        page.click("#design-train")
        _trained(page)

        [served] = _api(url, "/api/model")["models"]
        assert served["model"] == "designed" and served["block"] == spec
        parts = ["incep1.1x1", "incep1.5x5", "incep2.1x1", "incep2.5x5"]
        assert [p["name"] for p in served["parts"]] == parts
        assert served["id"] in page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
        assert page.input_value("#model") == served["id"]  # chosen on the Explore tab
        explained = _api(url, "/api/explain", {"image": _digit_data_url(), "model": served["id"]})
        assert [b["part"] for layer in explained["layers"] for b in layer.get("branches", [])] == parts

        assert page.get_attribute("#train-chart", "data-curves") == "1"
        page.select_option("#train-model", "resnet")  # the lecture's network, after the design, on the same chart
        page.click("#train-start")
        _trained(page)
        assert page.get_attribute("#train-chart", "data-curves") == "2"
        legend = page.locator("#train-legend li").all_inner_texts()
        assert len(legend) == 2 and spec in legend[0] and legend[1] == "resnet", legend
        colours = page.eval_on_selector_all("#train-legend .swatch", "s => s.map(e => e.style.background)")
        assert len(set(colours)) == 2
