"""Every error the page can show is in the page's language: the server sends a code from serve/inputs.ERROR_CODES
with each error (beside its English line), i18n.js has an English and a Chinese text for each code, and in a real
Chromium switched to Chinese, errors from the server and the page's own failures read in Chinese."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.data.tensors import pictures  # noqa: E402
from cnnlab.serve.app import create_app  # noqa: E402
from cnnlab.serve.inputs import ERROR_CODES, RequestError, coded, picture_error  # noqa: E402

from ..support.browser import chromium  # noqa: E402
from ..support.data import synthetic_mnist  # noqa: E402
from ..support.pictures import png_bytes  # noqa: E402
from ..support.servers import live_server  # noqa: E402
from .test_page import STATIC, _tables  # noqa: E402

LOCAL = "http://127.0.0.1"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
# ASCII words a Chinese error text may keep: names of protocols, headers and the command, as a Chinese reader meets
# them in Chinese documentation too.
TECHNICAL = {"Host", "Content", "Length", "JSON", "HTTP", "data", "image", "base", "boundary", "cnnlab", "serve"}


def _error_keys(table: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in table.items() if k.startswith("error.")}


def _client_codes() -> set[str]:
    """The codes of the failures the page meets itself, as its scripts name them: new Problem("client.file")."""
    codes = set()
    for js in STATIC.glob("*.js"):
        codes |= set(re.findall(r'new Problem\("([\w.]+)"', js.read_text(encoding="utf-8")))
    return codes


# ---- the codes and their texts ---------------------------------------------------------------------------------

def test_every_code_the_server_can_send_has_an_english_and_a_chinese_text():
    tables = _tables()
    assert len(ERROR_CODES) > 40  # the registry was read
    for code, params in ERROR_CODES.items():
        for language in ("en", "zh"):
            text = tables[language].get(f"error.{code}")
            assert text, f"i18n.js has no {language} text for error.{code}"
            # a text uses only what the server sends with the code (the rest would show as "{name}")
            assert set(PLACEHOLDER.findall(text)) <= set(params), (language, code, text)
    # the page's own failures have their texts too
    client = _client_codes()
    assert {"client.file", "client.offline", "client.not_json"} <= client
    for code in client:
        assert f"error.{code}" in tables["en"] and f"error.{code}" in tables["zh"], code
    # and every error text of the page belongs to a code someone sends: the server's, a field's own words for one,
    # the page's own failures, or the line for a code the page does not know
    for key in _error_keys(tables["en"]):
        code = key.removeprefix("error.")
        field_of = code.rsplit(".", 1)[0]
        assert (code in ERROR_CODES or code in client or code == "unknown"
                or (field_of in ERROR_CODES and "field" in ERROR_CODES[field_of])), f"{key}: no code sends it"


def test_the_chinese_error_texts_are_chinese():
    tables = _tables()
    for key, text in _error_keys(tables["zh"]).items():
        assert CJK.search(text), key
        # what a reader types stays as it is typed: a run of text with ":", "=" or ">" in it is syntax, not English
        prose = re.sub(r"\S*[:=>]\S*", "", PLACEHOLDER.sub("", text))
        words = set(re.findall(r"[A-Za-z]{4,}", prose))
        assert words <= TECHNICAL, (key, words - TECHNICAL)
    assert set(_error_keys(tables["zh"])) == set(_error_keys(tables["en"]))


def test_a_code_is_declared_with_its_parameters_or_refused():
    assert RequestError(422, "x", "part.unknown", parts="a", valid="b").answer() == {
        "error": "x", "code": "part.unknown", "params": {"parts": "a", "valid": "b"}}
    with pytest.raises(ValueError, match="not declared"):
        coded("no.such.code")
    with pytest.raises(ValueError, match="takes the parameters"):
        RequestError(422, "x", "part.unknown", parts="a")


# ---- what the server sends --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """A resnet trained for two steps on noise (it has parts to switch off; what it answers is not the point)."""
    from cnnlab.train import fit, make_config

    root = tmp_path_factory.mktemp("errors_runs")
    cfg = make_config("resnet", steps=2, batch_size=50, val_size=50, device="cpu")
    fit(cfg, synthetic_mnist(train=200, test=50, seed=0), out_root=root, progress=False)
    return root


@pytest.fixture(scope="module")
def client(runs_root):
    with TestClient(create_app(runs_root=runs_root), base_url=LOCAL) as c:
        yield c


def _white_png() -> bytes:
    return png_bytes(Image.new("L", (60, 60), 255))


def _bar_png() -> bytes:
    """A picture with ink: a dark bar on white, as a 1 is drawn on the page."""
    img = Image.new("L", (60, 60), 255)
    img.paste(0, (26, 8, 34, 52))
    return png_bytes(img)


def _as(kind: str, body: bytes) -> dict:
    """The request arguments of a body of that Content-Type."""
    return {"content": body, "headers": {"Content-Type": kind}}


# name: (method, path, request arguments, the code the answer must carry)
REQUESTS = {
    "not an image": ("post", "/api/predict", _as("image/png", b"hello, not a picture"), "image.unreadable"),
    "a blank picture": ("post", "/api/predict", _as("image/png", _white_png()), "image.no_ink"),
    "an empty body": ("post", "/api/predict", _as("image/png", b""), "body.empty"),
    "text/plain": ("post", "/api/predict", _as("text/plain", b"x"), "image.type"),
    "no data URL": ("post", "/api/predict", {"json": {"picture": 1}}, "image.no_url"),
    "bad base64": ("post", "/api/predict", {"json": {"image": "data:image/png;base64,@@@"}}, "image.base64"),
    "JSON array": ("post", "/api/predict", {"json": [1, 2]}, "json.object"),
    "broken JSON": ("post", "/api/predict", _as("application/json", b"{nope"), "json.invalid"),
    "no file field": ("post", "/api/predict", {"files": {"other": ("a.png", b"x", "image/png")}}, "multipart.no_file"),
    "unknown model": ("post", "/api/predict?model=nope", _as("image/png", _white_png()), "model.unknown"),
    "unknown part": ("post", "/api/explain?silence=conv9.skip", _as("image/png", _bar_png()), "part.unknown"),
    "silence not a list": ("post", "/api/explain", {"json": {"image": "data:image/png;base64,AAAA", "silence": "x"}},
                           "silence.list"),
    "budget too short": ("post", "/api/train", {"json": {"model": "resnet", "budget": 5}}, "field.range"),
    "budget a string": ("post", "/api/train", {"json": {"model": "resnet", "budget": "5"}}, "field.number"),
    "no model": ("post", "/api/train", {"json": {"budget": 30}}, "field.text"),
    "untrainable model": ("post", "/api/train", {"json": {"model": "vgg", "budget": 30}}, "training.model"),
    "unknown data set": ("post", "/api/train", {"json": {"model": "resnet", "budget": 30, "dataset": "cifar"}},
                         "training.dataset"),
    "order not JSON": ("post", "/api/train", _as("text/plain", b"model=resnet"), "json.type"),
    "nothing to stop": ("post", "/api/train/stop", {"json": {}}, "training.idle"),
    "another origin": ("post", "/api/train", {"json": {}, "headers": {"Origin": "http://evil.example"}}, "origin.other"),
    "another site": ("post", "/api/train", {"json": {}, "headers": {"Sec-Fetch-Site": "cross-site"}}, "origin.site"),
    "another host": ("get", "/api/model", {"headers": {"Host": "evil.example"}}, "host.refused"),
    "no such file": ("get", "/static/nothing.js", {}, "page.missing"),
    "no such route": ("get", "/api/nothing", {}, "http.status"),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_every_error_answer_carries_its_code_and_parameters(client, name):
    method, path, kwargs, code = REQUESTS[name]
    r = getattr(client, method)(path, **kwargs)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    answer = r.json()
    assert answer["code"] == code, answer
    assert set(answer["params"]) == set(ERROR_CODES[code]), answer
    assert answer["error"] and "\n" not in answer["error"]  # the English line is still there, for the CLI and API users


def test_the_parameters_are_what_the_text_needs(client):
    r = client.post("/api/explain?silence=conv9.skip", content=_bar_png(), headers={"Content-Type": "image/png"})
    params = r.json()["params"]
    assert params["parts"] == "conv9.skip" and "rblock2.skip" in params["valid"]
    r = client.post("/api/train", json={"model": "resnet", "budget": 5})
    assert r.json()["params"] == {"field": "budget", "value": "5", "low": "15", "high": "300"}


def _tiff_with_nan() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), mode="F").save(buf, format="TIFF")
    return buf.getvalue()


def _png_of_size(width: int, height: int, mode: str = "L") -> bytes:
    return png_bytes(Image.new(mode, (width, height)))


# Each line the picture reader writes, made to be written: the code the page is sent for it.
PICTURE_LINES = {
    "image.empty": lambda: pictures.load_image(b""),
    "image.bytes": lambda: pictures.load_image(b"\0" * (pictures.MAX_BYTES + 1)),
    "image.side": lambda: pictures.load_image(_png_of_size(pictures.MAX_SIDE + 1, 2)),
    "image.pixels": lambda: pictures.load_image(_png_of_size(2100, 2100, "RGB")),
    "image.unreadable": lambda: pictures.load_image(b"not a picture at all"),
    "image.undecodable": lambda: pictures.load_image(_png_of_size(40, 40)[:-20]),
    "image.not_finite": lambda: pictures.load_image(_tiff_with_nan()),
    "image.no_ink": lambda: pictures.to_mnist(_white_png()),
    "image.no_item": lambda: pictures.to_fashion(_white_png()),
}


@pytest.mark.parametrize("code", list(PICTURE_LINES))
def test_each_line_of_the_picture_reader_has_its_code(code):
    with pytest.raises(pictures.ImageError) as raised:
        PICTURE_LINES[code]()
    error = picture_error(raised.value, 422)
    assert error.code == code, str(raised.value)
    assert error.message == str(raised.value)


def test_the_line_for_an_image_without_pixels_has_its_code():
    # Pillow refuses a file of width or height 0 before the reader's own check can say so: the line as it is written
    error = picture_error(pictures.ImageError("the image has no pixels (0x5)"), 422)
    assert error.code == "image.no_pixels" and error.answer()["params"] == {"size": "0x5"}


def test_a_picture_line_without_a_code_still_reaches_the_page_with_its_words():
    error = picture_error(pictures.ImageError("a line written since"), 422)
    assert error.answer() == {"error": "a line written since", "code": "image.invalid",
                              "params": {"reason": "a line written since"}}


def _stand_in(tmp_path, script: str) -> str:
    """An executable that the server starts in place of Python's training process: the child is outside the server,
    and this one fails as a real one can."""
    path = tmp_path / "child"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# Each reads the order first, as the real child does (the server writes it as the child starts); the one that
# writes to stderr waits a moment after it, so that the server's reader of stderr has the line when it ends.
@pytest.mark.parametrize("script, code, params", [
    (None, "training.no_start", None),
    ("read order\nexit 3\n", "training.exit", {"code": 3}),
    ("read order\necho 'out of memory' >&2\nsleep 0.5\nexit 2\n", "training.exit_said", {"code": 2, "reason": "out of memory"}),
    ("read order\necho '{\"event\": \"error\", \"message\": \"no data set here\"}'\nexit 1\n", "training.failed",
     {"reason": "no data set here"}),
])
@pytest.mark.skipif(os.name != "posix", reason="the stand-in child is a shell script")
def test_a_failed_training_streams_its_code(tmp_path, monkeypatch, script, code, params):
    import sys

    monkeypatch.setattr(sys, "executable", str(tmp_path / "missing") if script is None else _stand_in(tmp_path, script))
    with TestClient(create_app(runs_root=tmp_path / "runs"), base_url=LOCAL) as c:
        assert c.post("/api/train", json={"model": "basic_cnn", "budget": 15}).status_code == 202
        end = time.monotonic() + 30
        while (snapshot := c.get("/api/train").json())["state"] != "failed":
            assert time.monotonic() < end, snapshot
            time.sleep(0.05)
    error = snapshot["events"][-1]
    assert error["event"] == "error" and error["code"] == code and error["message"], error
    assert set(error["params"]) == set(ERROR_CODES[code])
    if params is not None:
        assert error["params"] == params


# ---- the page, in Chinese -----------------------------------------------------------------------------------------

def _english_words(text: str, allowed: set[str]) -> list[str]:
    """Words of four or more ASCII letters in `text` that are not names the server's data holds (models, runs,
    parts) or the names of protocols and the command (TECHNICAL)."""
    return [w for w in re.findall(r"[A-Za-z]{4,}", text) if w not in allowed | TECHNICAL]


def _served_names(base: str) -> set[str]:
    import httpx

    listing = httpx.get(f"{base}/api/model", timeout=30).json()
    names = set(listing["trainable"])
    for m in listing["models"]:
        names |= {m["id"], m["model"], *[p["name"] for p in m["parts"]], *[p["block"] for p in m["parts"]]}
    return set(re.findall(r"[A-Za-z]+", " ".join(names)))


def _wait_for_error(page, selector: str, before: str = "") -> str:
    page.wait_for_function(
        "([sel, before]) => { const e = document.querySelector(sel); return e.classList.contains('error') && "
        "e.textContent && e.textContent !== before; }", arg=[selector, before], timeout=30_000)
    return page.inner_text(selector)


def _draw_a_stroke(page) -> None:
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.8 * box["height"], steps=6)
    page.mouse.up()


@pytest.mark.browser
def test_the_chinese_page_shows_every_error_in_chinese(runs_root, tmp_path):
    app = create_app(runs_root=runs_root)
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("these are my notes, not a picture of a digit\n")
    with live_server(app) as port, chromium() as browser:
        base = f"http://127.0.0.1:{port}"
        allowed = _served_names(base)
        page = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 900}).new_page()
        script_errors = []
        page.on("pageerror", lambda e: script_errors.append(str(e)))
        page.goto(base)
        page.wait_for_function("document.body.dataset.model")
        page.click("#lang")  # to Chinese, as a reader switches it
        assert page.get_attribute("html", "lang") == "zh-CN"
        seen = {}

        # a file that is no picture, through the upload button's input
        page.set_input_files("#upload", str(not_an_image))
        seen["upload"] = _wait_for_error(page, "#status")
        assert "图片" in seen["upload"]

        # the server out of reach while drawing, then an answer that is not JSON, then a code the page does not know
        page.route("**/api/explain", lambda route: route.abort())
        _draw_a_stroke(page)
        seen["offline"] = _wait_for_error(page, "#status", seen["upload"])
        assert "连不上服务器" in seen["offline"]
        page.unroute("**/api/explain")
        page.route("**/api/explain", lambda route: route.fulfill(status=502, body="<html>Bad Gateway</html>",
                                                                 content_type="text/html"))
        _draw_a_stroke(page)
        seen["not JSON"] = _wait_for_error(page, "#status", seen["offline"])
        assert "502" in seen["not JSON"]
        page.unroute("**/api/explain")
        page.route("**/api/explain", lambda route: route.fulfill(
            status=418, content_type="application/json",
            body=json.dumps({"error": "a teapot", "code": "brand.new", "params": {}})))
        _draw_a_stroke(page)
        unknown = _wait_for_error(page, "#status", seen["not JSON"])
        # a code the page does not know: a Chinese line, then the server's own English (the one place it shows)
        assert unknown.startswith("出错了：服务器报告了一个错误") and unknown.endswith("a teapot"), unknown
        page.unroute("**/api/explain")

        # a training order refused: a budget the server does not take
        page.click("#tab-train")
        page.fill("#train-budget", "5")
        page.click("#train-start")
        seen["budget"] = _wait_for_error(page, "#train-status")
        assert "训练时长" in seen["budget"] and "15" in seen["budget"] and "300" in seen["budget"]
        page.click("#tab-explore")

        # an unknown part and an unknown model, asked of the API from the page, worded by the page's own Problem
        for name, query in (("part", "?silence=conv9.skip"), ("model", "?model=nope")):
            seen[name] = page.evaluate(
                """async query => {
                     const { Problem, t } = await import("/static/i18n.js");
                     const canvas = document.getElementById("pad");
                     const res = await fetch("/api/explain" + query, { method: "POST", headers: { "Content-Type": "application/json" },
                                                                       body: JSON.stringify({ image: canvas.toDataURL("image/png") }) });
                     return t("error", { message: Problem.from(await res.json(), res.status) });
                   }""", query)
        assert "conv9.skip" in seen["part"] and "rblock2.skip" in seen["part"]

        for what, text in seen.items():
            assert CJK.search(text), (what, text)
            assert not _english_words(text, allowed | {"conv9", "skip", "nope"}), (what, text)

        # back to English: the error line on the page follows the switch
        page.click("#lang")
        assert page.inner_text("#train-status").startswith("error: the time budget is 5 s"), page.inner_text("#train-status")
    assert not script_errors, script_errors
