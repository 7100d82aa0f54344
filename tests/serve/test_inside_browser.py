"""The inside view in a real headless Chromium, on every registered model: the stages the page shows and their shapes
are the network's own forward's, one clicked value's arithmetic is the model's value, the colour scale follows the
picker, and a branch that is off shows nothing.

The models are trained for a few steps on synthetic digits: shapes and arithmetic do not depend on how well a
model reads (test_browser.py checks that on real MNIST).
"""

from __future__ import annotations

import base64
import json

import pytest
import torch

from cnnlab.models import list_models
from cnnlab.runs.forward import model_input
from cnnlab.runs.trained import load

from ..support.data import synthetic_mnist
from .test_browser import DIGITS, _browser, _draw, _requests, _serving

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def every_model(tmp_path_factory):
    """A run of every registered model (a few steps on synthetic digits) and a server for all of them."""
    from cnnlab.train import fit, make_config

    root = tmp_path_factory.mktemp("runs")
    data = synthetic_mnist(train=300, test=50, seed=0)
    runs = {name: fit(make_config(name, steps=2, batch_size=50, val_size=50, device="cpu"), data, out_root=root,
                      progress=False).run_dir for name in list_models()}
    with _serving(list(runs.values()), tmp_path_factory.mktemp("page_runs")) as url:
        yield url, runs


def _open_model(page, url: str, run_dir) -> None:
    page.goto(url)
    page.wait_for_function("document.getElementById('model').options.length > 0 && document.body.dataset.model")
    page.select_option("#model", run_dir.name)
    page.wait_for_function(f"document.body.dataset.model === {json.dumps(run_dir.name)}")


def _own_forward(run_dir, image_url: str) -> tuple[dict, torch.Tensor]:
    """The output shape and output of each module of the run's network in its own forward of the picture the page
    sent, with no hook of ours but these."""
    trained = load(run_dir)
    picture = base64.b64decode(image_url.split(",", 1)[1])
    x = model_input(torch.from_numpy(trained.prepare(picture)).unsqueeze(0), trained.config)
    outputs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, args, out) -> None:
            outputs.setdefault(name, out[0].detach().clone())
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in trained.network.named_modules() if n]
    try:
        with torch.inference_mode():
            logits = trained.network(x)[0]
    finally:
        for h in handles:
            h.remove()
    return outputs, logits


def test_every_model_s_stages_and_shapes_are_its_own_forward_s(every_model):
    url, runs = every_model
    with _browser(url) as browser:
        page = browser.page()
        for name, run_dir in runs.items():
            _open_model(page, url, run_dir)
            with _requests(page) as requests:
                _draw(page, DIGITS["7"])
            sent = [json.loads(r.post_data) for r in requests if r.url.endswith("/api/explain")][-1]
            own, logits = _own_forward(run_dir, sent["image"])
            cards = page.eval_on_selector_all(
                "#inside .layer", "cs => cs.map(c => [c.dataset.layer, c.querySelector('.layer-head .shape').dataset.shape,"
                                  " c.querySelector('.layer-head .kind').textContent, (c.querySelector(':scope > .rule') || {}).textContent || ''])")
            checked = 0
            for layer, shape, kind, rule in cards:
                if layer in own:  # a stage of a module of its own, or a block: the module's output shape
                    assert shape == " × ".join(map(str, own[layer].shape)), (name, layer)
                    checked += 1
                assert kind and "kind." not in kind and "op." not in kind, (name, layer, kind)
            assert cards[-1][0] == "fc" and cards[-1][1] == str(len(logits))
            assert checked >= 3, (name, cards)
            # the lecture's arithmetic, where the lecture has it
            if name == "inception_net":
                rules = {layer: rule for layer, _, _, rule in cards}
                assert rules["conv1"].startswith("28 − 5 + 1 = 24") and rules["pool1"] == "24 / 2 = 12"
                assert rules["incep1"] == "16 + 24 + 24 + 24 = 88" and rules["flatten"] == "88 × 4 × 4 = 1408"
                assert [c[0] for c in cards] == ["conv1", "pool1", "relu1", "incep1", "conv2", "pool2", "relu2",
                                                 "incep2", "flatten", "fc"]
            # logits drawn around zero: a negative score hangs below the line
            values = page.eval_on_selector_all("#inside .logits .col", "cs => cs.map(c => parseFloat(c.dataset.value))")
            assert values == pytest.approx(logits.tolist(), abs=1e-4)
            signs = page.eval_on_selector_all("#inside .logits .bar", "bs => bs.map(b => b.classList.contains('neg'))")
            assert signs == [v < 0 for v in values]


def _click_map(page, selector: str, fx: float, fy: float) -> None:
    page.locator(selector).first.scroll_into_view_if_needed()
    box = page.locator(selector).first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)


@pytest.mark.parametrize("name, card, module", [("inception_net", "conv1", "conv1"), ("resnet_bn", "stem.0", "stem.0"),
                                                ("inception_net", "conv2", "conv2")])
def test_a_clicked_value_s_arithmetic_is_the_model_s_value(every_model, name, card, module):
    url, runs = every_model
    with _browser(url) as browser:
        page = browser.page()
        _open_model(page, url, runs[name])
        _draw(page, DIGITS["4"])
        with _requests(page) as requests:
            _click_map(page, f'#inside .layer[data-layer="{card}"] img.maps', 0.12, 0.1)
            page.wait_for_selector("#value:not([hidden]) .step.conv")
        body = [json.loads(r.post_data) for r in requests if r.url.endswith("/api/value")][-1]
        own, _ = _own_forward(runs[name], body["image"])
        value = own[module][body["channel"], body["y"], body["x"]].item()
        computed = float(page.get_attribute("#value .step.conv", "data-computed"))
        shown = float(page.get_attribute("#value .step.conv", "data-value"))
        assert computed == pytest.approx(value, abs=1e-5)
        assert shown == pytest.approx(value, abs=1e-5)
        text = page.inner_text("#value")
        assert "Σ" in text and "multiply-adds" in text
        assert page.locator("#value .grid.kernel").count() >= 1  # the kernel's weights, shown
        # the panel sits right under the card that was clicked
        assert page.evaluate("document.getElementById('value').previousElementSibling.dataset.layer") == card


def test_the_colour_scale_follows_the_picker_and_an_off_branch_shows_nothing(every_model):
    url, runs = every_model
    with _browser(url) as browser:
        page = browser.page()
        _open_model(page, url, runs["inception_net"])
        _draw(page, DIGITS["7"])
        legend = page.inner_text('#inside .layer[data-layer="conv1"] .maps-legend')
        assert legend.count(".") >= 2 and "share one range" in page.inner_text("#inside .scale-note")
        with _requests(page) as requests:
            page.select_option("#scale", "map")
            page.wait_for_function("document.getElementById('inside').dataset.scale === 'map' && !document.body.dataset.busy")
        assert [json.loads(r.post_data)["scale"] for r in requests if r.url.endswith("/api/explain")][-1] == "map"
        assert "own" in page.inner_text('#inside .layer[data-layer="conv1"] .maps-legend')
        # hovering a map names it and reads its value back
        page.locator('#inside .layer[data-layer="conv1"] img.maps').scroll_into_view_if_needed()
        box = page.locator('#inside .layer[data-layer="conv1"] img.maps').bounding_box()
        page.mouse.move(box["x"] + 3, box["y"] + 3)
        assert "map 1, row" in page.inner_text('#inside .layer[data-layer="conv1"] .maps-hover')
        # a branch switched off: no maps and no share, and the block's own explanation line is there
        page.click('#inside button[data-part="incep1.5x5"]')
        page.wait_for_function("document.getElementById('inside').dataset.silenced === 'incep1.5x5' && !document.body.dataset.busy")
        off = page.locator('#inside .part[data-part-box="incep1.5x5"]')
        assert off.locator("img.maps:visible").count() == 0
        assert "gives nothing" in off.inner_text() and "share" not in off.inner_text()
        assert "energy" in page.inner_text('#inside .layer[data-layer="incep1"] .explain-line')
        # label smoothing is explained beside "sure"
        assert "label smoothing" in page.inner_text("#confidence")


@pytest.mark.parametrize("name, output", [("res_original", "relu(F(x) + x)"), ("res_bn_after_add", "relu(BN(F(x) + x))"),
                                          ("res_preact", "F(x) + x")])
def test_a_residual_unit_says_what_follows_its_sum(every_model, name, output):
    """The page reads what a unit outputs off its own stages: a ReLU after the sum, BN and ReLU, or nothing (a
    pre-activation unit passes the sum itself on)."""
    url, runs = every_model
    with _browser(url) as browser:
        page = browser.page()
        _open_model(page, url, runs[name])
        _draw(page, DIGITS["7"])
        card = page.inner_text('#inside .layer[data-layer="units.0"]')
        assert f"output {output}\n" in card
        line = page.inner_text('#inside .layer[data-layer="units.0"] .explain-line')
        assert f"The block outputs {output}" in line
        assert ("the ReLU cuts" in line) == output.startswith("relu(")
