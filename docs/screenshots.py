"""The page's screenshots under docs/img, taken in a real headless Chromium from a running `cnnlab serve`.

    cnnlab serve &                                  # the runs of `make run` (the lecture's three)
    python docs/screenshots.py                      # http://127.0.0.1:8000 -> docs/img/*.png
    python docs/screenshots.py --url http://127.0.0.1:8765 --only inside

For each of English and Chinese, at 1280 px (a laptop) and 375 px (a phone):
- inside[-zh][-phone].png: inception_net reading a drawn 7, every stage with its shape, arithmetic and colour scale,
  and the panel of one clicked value of conv1 (its window, kernel, products and bias, then pooling and ReLU);
- design[-zh][-phone].png: the Train tab after a designed block was trained beside the lecture's network (needs a
  training from the page first: `--only design` trains the lecture's inception_net and a design for 20 s each).

Needs Debian's chromium (/usr/bin/chromium, or $CNNLAB_CHROMIUM) and the playwright package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "img"
SEVEN = [[(75, 60), (205, 60)], [(205, 60), (160, 145), (120, 235)]]
SIZES = {"": {"width": 1280, "height": 900}, "-phone": {"width": 375, "height": 800}}
LANGUAGES = {"": "en-US", "-zh": "zh-CN"}


def draw(page, strokes) -> None:
    page.click("#clear")
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0] * scale, box["y"] + stroke[0][1] * scale)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=6)
        page.mouse.up()
    page.wait_for_function("document.body.dataset.prediction !== undefined && !document.body.dataset.busy")


def inside(page, url: str, path: Path) -> None:
    page.goto(url)
    page.wait_for_function("document.getElementById('model').options.length > 0 && document.body.dataset.model")
    pick = page.eval_on_selector_all("#model option", "os => os.map(o => [o.value, o.text])")
    page.select_option("#model", next(v for v, text in pick if text.startswith("inception_net")))
    draw(page, SEVEN)
    maps = page.locator('#inside .layer[data-layer="conv1"] img.maps')
    maps.scroll_into_view_if_needed()
    box = maps.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.14, box["y"] + box["height"] * 0.12)
    page.wait_for_selector("#value:not([hidden]) .step.conv")
    page.evaluate("window.scrollTo(0, 0)")
    height = page.evaluate("document.getElementById('value').getBoundingClientRect().bottom + window.scrollY + 12")
    width = page.viewport_size["width"]
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": width, "height": min(height, 2400)}, full_page=True)


def train_and_wait(page) -> None:
    page.wait_for_function("document.getElementById('train-stop').disabled === false", timeout=60_000)
    page.wait_for_function("document.getElementById('train-stop').disabled === true", timeout=300_000)


def design(browser, url: str, out: Path) -> list[Path]:
    """One page session: train the lecture's inception_net, then a design whose 1x1 reductions are narrow (4
    channels before the 5x5 and the 3x3s), 20 s each, and take the Train tab with both curves."""
    page = browser.new_context(viewport=SIZES[""], locale="en-US").new_page()
    page.goto(url)
    page.wait_for_function("document.getElementById('model').options.length > 0")
    page.click("#tab-train")
    page.fill("#train-budget", "20")
    page.select_option("#train-model", "inception_net")
    page.click("#train-start")
    train_and_wait(page)
    for branch in ("5x5", "3x3dbl"):
        page.fill(f"#design-reduce-{branch}", "4")
    page.wait_for_function("document.getElementById('design-spec').textContent.includes('5x5=4>24')")
    page.click("#design-train")
    train_and_wait(page)
    paths = []
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        for lang, locale in LANGUAGES.items():
            if (page.evaluate("document.documentElement.lang") == "en") != (lang == ""):
                page.click("#lang")
            page.wait_for_timeout(400)
            path = out / f"design{lang}{size}.png"
            page.screenshot(path=str(path), full_page=True)
            paths.append(path)
    page.context.close()
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running cnnlab serve (default: %(default)s)")
    parser.add_argument("--only", choices=("inside", "design"), help="one kind of screenshot (default: both)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go (default: docs/img)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        if args.only in (None, "inside"):
            for size, viewport in SIZES.items():
                for lang, locale in LANGUAGES.items():
                    page = browser.new_context(viewport=viewport, locale=locale).new_page()
                    path = args.out / f"inside{lang}{size}.png"
                    inside(page, args.url, path)
                    print(path)
                    page.context.close()
        if args.only in (None, "design"):
            for path in design(browser, args.url, args.out):
                print(path)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
