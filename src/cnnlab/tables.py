"""Plain-text and Markdown tables, so the CLI, the benchmarks and the docs print the same thing."""

from __future__ import annotations

import unicodedata
from typing import Any, Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    """Columns aligned: numbers to the right, text to the left. markdown=True gives a GitHub table."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(display_width(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(headers))]

    def line(r: list[str]) -> str:
        parts = [_pad(c, w, right=num) for c, w, num in zip(r, widths, numeric)]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    if markdown:
        rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    else:
        rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def display_width(s: str) -> int:
    """Columns `s` takes in a terminal: East Asian wide and fullwidth characters (猫, Ａ) two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _pad(s: str, width: int, right: bool) -> str:
    # str.ljust counts characters, not columns, so a class named 猫 would push the next column one place left.
    fill = " " * (width - display_width(s))
    return fill + s if right else s + fill


def _is_number(s: str) -> bool:
    s = s.replace(",", "").rstrip("%").rstrip("s").replace("±", "").strip()
    try:
        float(s)
        return True
    except ValueError:
        return s in ("", "-")
