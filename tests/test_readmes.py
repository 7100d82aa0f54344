"""The two READMEs, English and Chinese, and the pages of docs/: every command they show is one the CLI accepts,
both READMEs name the course and lecture the way its students know them, link each other and every page of docs/,
stay short, and quote the same figures; every relative link leads to a file."""

import re
import shlex
from pathlib import Path

import pytest

from cnnlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
READMES = ("README.md", "README.zh-CN.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """Each cnnlab command of the code blocks, with its arguments: every line of a shell block, the `$ ` lines of
    the others (whose other lines are output); `torchrun ... -m cnnlab ...` counts, `make run` and the like do not."""
    found = []
    for lang, body in FENCE.findall(text):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            elif lang not in ("bash", "sh", "shell", "console"):
                continue
            words = shlex.split(line, comments=True)
            if words[:1] == ["cnnlab"]:
                found.append((line, words[1:]))
            elif "-m" in words and words[words.index("-m") + 1:][:1] == ["cnnlab"]:
                found.append((line, words[words.index("-m") + 2:]))
    return found


@pytest.mark.parametrize("name", READMES)
def test_every_command_in_the_readme_is_accepted_by_the_cli(name, capsys):
    commands = _commands(_text(name))
    shown = {argv[0] for _, argv in commands}
    assert {"train", "evaluate", "compare", "report", "predict", "export", "serve"} <= shown, shown
    assert any(line.startswith("torchrun") for line, _ in commands)
    parser = build_parser()
    refused = []
    for line, argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            refused.append(f"{line}\n    {capsys.readouterr().err.strip()}")
    assert refused == [], f"{name}: commands the CLI refuses:\n" + "\n".join(refused)


@pytest.mark.parametrize("name, other", [("README.md", "README.zh-CN.md"), ("README.zh-CN.md", "README.md")])
def test_both_readmes_name_the_course_and_lecture_near_the_top_and_link_each_other(name, other):
    # A student searching for the lecture by its Chinese name finds the project from either page.
    top = "\n".join(_text(name).splitlines()[:12])
    assert f"]({other})" in _text(name).splitlines()[0]
    for words in ("刘二大人", "《PyTorch深度学习实践》", "卷积神经网络（高级篇）"):
        assert words in top, f"{name} does not name {words} near its top"
    assert re.search(r"lecture 11\b|第 ?11 ?讲", top), f"{name} does not say it is lecture 11 near its top"


def _figures(text: str) -> set[str]:
    """The numbers with a decimal point or thousands commas (99.37, 120,422,400, 2.13.0), code blocks included."""
    return set(re.findall(r"\d+(?:[.,]\d+)+", text))


def test_both_readmes_quote_the_same_figures():
    chinese, english = _figures(_text("README.zh-CN.md")), _figures(_text("README.md"))
    assert len(english) >= 20  # they quote the results, so this checks something
    assert sorted(english - chinese) == [], "figures of README.md missing from README.zh-CN.md"
    assert sorted(chinese - english) == [], "figures of README.zh-CN.md that README.md does not quote"


@pytest.mark.parametrize("name", READMES)
def test_the_readme_is_a_front_door(name):
    """Short, with the two set-up commands and the three steps to the page on its first screen, and every page of
    docs/ linked."""
    lines = _text(name).splitlines()
    assert len(lines) <= 200, f"{name} has {len(lines)} lines"
    first_screen = "\n".join(lines[:60])
    for needed in ("make run", "make test", "cnnlab serve", "http://127.0.0.1:8000"):
        assert needed in first_screen, f"{name}: {needed!r} is not on the first screen"
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert len(pages) >= 8
    unlinked = [page for page in pages if f"](docs/{page}" not in _text(name)]
    assert unlinked == [], f"{name} does not link {unlinked}"


DOCS = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_every_command_of_the_docs_is_accepted_by_the_cli(page, capsys):
    parser = build_parser()
    refused = []
    for line, argv in _commands(page.read_text(encoding="utf-8")):
        try:
            parser.parse_args(argv)
        except SystemExit:
            refused.append(f"{line}\n    {capsys.readouterr().err.strip()}")
    assert refused == [], f"{page.name}: commands the CLI refuses:\n" + "\n".join(refused)


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_every_relative_link_of_the_docs_and_readmes_leads_to_a_file(page):
    for path in (page, ROOT / "README.md", ROOT / "README.zh-CN.md"):
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            assert (path.parent / target).exists(), f"{path.name} links {target}, which does not exist"


def test_the_chinese_readme_shows_the_inside_view_screenshot():
    assert re.search(r"!\[[^\]]*\]\(docs/img/inside(-zh)?\.png\)", _text("README.zh-CN.md"))
