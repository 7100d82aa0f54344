"""Fonts for figure text that comes from the user, such as class folders named 猫 狗 鸟.

matplotlib's default font, DejaVu Sans, has no Chinese, Japanese or Korean glyphs: it draws them as empty boxes
and warns once per glyph. We bundle no font. A CJK font installed on the machine is found at run time and put
after the default family, and matplotlib (>= 3.6) falls back to it glyph by glyph, so Latin text looks as before.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable

import matplotlib
from matplotlib import font_manager
from matplotlib.ticker import LogFormatter

# Families that cover Chinese, Japanese and Korean, by the Debian package that installs them; the first found wins.
CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR",  # fonts-noto-cjk
    "Source Han Sans SC", "Source Han Sans",  # Adobe's release of the same design
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",  # fonts-wqy-zenhei, fonts-wqy-microhei
    "Droid Sans Fallback",  # fonts-droid-fallback
)
INSTALL_HINT = "apt-get install fonts-wqy-zenhei (or fonts-noto-cjk)"

# matplotlib's per-glyph warning, raised while a figure is drawn (tight_layout, savefig), not where text is set.
_MISSING_GLYPH = r"Glyph \d+ \(.*\) missing from font\(s\)"


def plain_log_ticks(axis) -> None:
    """Label a log-scaled `axis` (ax.yaxis) with plain numbers, 0.3 0.5 1 2, where matplotlib writes 3x10^-1 in
    mathtext: easier to read for error rates and losses, and no mathtext to parse, which cost about 0.15 s the
    first time a process drew (0.39 -> 0.25 s for curves.png). Every minor tick is labelled when the axis spans
    under a decade, a subset of them (matplotlib's choice) under two: error rates that fall from 10% to 0.4% still
    read off the axis."""
    axis.set_major_formatter(_PlainLogFormatter())
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 1)))


class _PlainLogFormatter(LogFormatter):
    def __call__(self, x, pos=None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def font_family(*texts: str, candidates: Iterable[str] = CJK_FAMILIES) -> list[str]:
    """The font families for figure text showing `texts`: matplotlib's default, then an installed CJK font
    from `candidates` when a character is missing from the default font.

    Pass the result as `fontfamily=` to the text (a title, tick labels). Where no such font is installed the
    text is drawn anyway, as boxes; the user is told once, on stderr, which package to install, and
    matplotlib's warning per glyph is kept off the terminal.
    """
    default = list(matplotlib.rcParams["font.family"])
    missing = _missing_from_default_font(texts)
    if not missing:
        return default
    cjk = installed_family(tuple(candidates))
    if cjk is not None:
        return default + [cjk]
    # Process-wide, because the warnings come later, from whichever call draws the figure; each one only
    # repeats, per glyph, the line below.
    warnings.filterwarnings("ignore", message=_MISSING_GLYPH, category=UserWarning)
    _tell_once(f"cnnlab: no installed font has {''.join(sorted(missing))[:12]}, so figure labels show them as "
               f"boxes; to draw them: {INSTALL_HINT}")
    return default


@functools.cache
def installed_family(candidates: tuple[str, ...] = CJK_FAMILIES) -> str | None:
    """The first of `candidates` that matplotlib can use, or None.

    matplotlib lists the fonts once and caches the list on disk, so a font installed since (the usual fix for
    boxes) would stay unseen; fonts newer than that list are added, for this process, before giving up.
    """
    found = _first_listed(candidates)
    if found is None and _add_fonts_newer_than_list():
        found = _first_listed(candidates)
    if found is not None:
        _fallbacks.add(found)
        logging.getLogger("matplotlib.font_manager").addFilter(_drop_weight_substitution)
    return found


_fallbacks: set[str] = set()  # the CJK families handed out, whose weight substitutions go unreported


def _drop_weight_substitution(record: logging.LogRecord) -> bool:
    # Some CJK fonts ship one weight (WenQuanYi Zen Hei: Medium only), and matplotlib would log a warning on
    # the user's terminal for every text size that asks for normal; the nearest weight is what we want.
    substituted = record.msg.startswith("findfont: Failed to find font weight") and len(record.args or ()) == 3
    return not (substituted and record.args[1] in _fallbacks)


def _first_listed(candidates: tuple[str, ...]) -> str | None:
    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((c for c in candidates if c in names), None)


def _add_fonts_newer_than_list() -> bool:
    known = {os.path.realpath(f.fname) for f in font_manager.fontManager.ttflist}
    new = [p for p in map(str, font_manager.findSystemFonts()) if os.path.realpath(p) not in known]
    for path in new:
        try:
            font_manager.fontManager.addfont(path)
        except (OSError, RuntimeError, ValueError):
            pass  # a font file matplotlib cannot read is not ours to report; the others still count
    return bool(new)


def _missing_from_default_font(texts: Iterable[str]) -> set[str]:
    default = font_manager.findfont(font_manager.FontProperties(family=matplotlib.rcParams["font.family"]))
    covered = _charmap(default)
    return {c for t in texts for c in str(t) if c.isprintable() and not c.isspace() and ord(c) not in covered}


@functools.cache
def _charmap(font_path: str) -> frozenset[int]:
    return frozenset(font_manager.get_font(font_path).get_charmap())


_told: list[str] = []  # the note already printed, if any


def _tell_once(line: str) -> None:
    if not _told:
        print(line, file=sys.stderr)
        _told.append(line)


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """Write a matplotlib figure to `path` whole or not at all (atomic.atomic_writer): a full disk leaves the
    previous figure as it was, and a symbolic link at `path` is replaced, never written through. The format
    follows the name's ending, as savefig(path) would choose it."""
    from cnnlab.atomic import atomic_writer

    path = Path(path)
    with atomic_writer(path) as f:
        fig.savefig(f, dpi=dpi, format=path.suffix.lstrip(".").lower() or None)
