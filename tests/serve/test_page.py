"""The page's files, read as text (fast; test_browser.py runs them in Chromium): every string it shows is in both
language tables, no file names another host, and the wheel ships every file the page loads."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "cnnlab" / "serve" / "static"


def _tables() -> dict[str, dict[str, str]]:
    """The tables of i18n.js: {"en": {key: text}, "zh": {...}}, read the way a person reads the file."""
    source = (STATIC / "i18n.js").read_text(encoding="utf-8")
    body = source[source.index("export const STRINGS = {"):source.index("\n};")]
    tables, current = {}, None
    for line in body.splitlines():
        if m := re.fullmatch(r"\s{2}(\w+): \{", line):
            current = tables.setdefault(m.group(1), {})
        elif m := re.fullmatch(r'\s{4}"([\w.]+)": "(.*)",', line):
            current[m.group(1)] = m.group(2)
    return tables


def _used_keys() -> set[str]:
    """The keys the page names literally: data-i18n* attributes, t("..."), say("...")."""
    keys = set()
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    keys |= set(re.findall(r'data-i18n(?:-label|-title)?="([\w.]+)"', html))
    for js in STATIC.glob("*.js"):
        keys |= set(re.findall(r'\b(?:t|say)\("([\w.]+)"', js.read_text(encoding="utf-8")))
    return keys


def test_both_languages_have_every_string_and_every_used_key():
    tables = _tables()
    assert set(tables) == {"en", "zh"}
    assert len(tables["en"]) > 50  # the parse found the tables
    assert set(tables["en"]) == set(tables["zh"])
    used = _used_keys()
    assert len(used) > 30
    assert used <= set(tables["en"]), used - set(tables["en"])
    # keys made from the server's names: each kind of layer and each residual path has its words
    for kind in ("conv", "inception", "residual", "linear", "other"):
        assert f"kind.{kind}" in tables["en"]
    for path in ("skip", "conv", "sum"):
        assert f"path.{path}" in tables["en"]
    assert {"path.toggle.skip", "path.toggle.conv"} <= set(tables["en"])


def test_the_chinese_table_is_chinese_with_the_same_placeholders():
    tables = _tables()
    cjk = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # Chinese characters and punctuation
    for key, english in tables["en"].items():
        chinese = tables["zh"][key]
        assert sorted(re.findall(r"\{\w+\}", chinese)) == sorted(re.findall(r"\{\w+\}", english)), key
        if key != "lang.switch":  # the switch names the other language
            assert cjk.search(chinese), f"{key}: {chinese!r}"
    # the course's own words, as its students know them
    text = " ".join(tables["zh"].values())
    for term in ("卷积神经网络（高级篇）", "Inception 块", "残差块", "分支", "跳跃连接", "特征图", "概率", "训练"):
        assert term in text, term


def test_the_page_asks_nothing_of_another_host():
    for f in STATIC.iterdir():
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[\w-]+\.[\w.-]+/", text.replace("http://www.w3.org", "")), f.name
        assert "@import" not in text and "fonts.googleapis" not in text


def test_the_wheel_ships_every_file_of_the_page():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["cnnlab.serve"]
    files = [f.name for f in STATIC.iterdir() if f.is_file()]
    assert {"index.html", "app.js", "i18n.js", "style.css"} <= set(files)
    for name in files:
        assert any(fnmatch(f"static/{name}", p) for p in patterns), name
    # and index.html loads only files that are there
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    for ref in re.findall(r'(?:src|href)="/static/([^"]+)"', html):
        assert (STATIC / ref).is_file(), ref
    for js in STATIC.glob("*.js"):
        for ref in re.findall(r'from "\./([^"]+)"', js.read_text(encoding="utf-8")):
            assert (STATIC / ref).is_file(), f"{js.name} imports {ref}"


def test_the_page_has_no_inline_script():
    """All behaviour is in the module scripts, none in the HTML: the page works under a Content-Security-Policy of
    'self'."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"\son\w+=", html) == []
