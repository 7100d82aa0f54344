"""The two READMEs, English and Chinese: every command they show is one the CLI accepts, both name the course and
lecture the way its students know them and link each other, and the Chinese one quotes no figure the English one
does not."""

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


def test_every_figure_the_chinese_readme_quotes_is_one_the_english_readme_quotes():
    chinese, english = _figures(_text("README.zh-CN.md")), _figures(_text("README.md"))
    assert len(chinese) >= 20  # it quotes the results, so this checks something
    assert sorted(chinese - english) == []


def test_the_chinese_readme_shows_the_inside_view_screenshot():
    assert re.search(r"!\[[^\]]*\]\(docs/img/inside(-zh)?\.png\)", _text("README.zh-CN.md"))
