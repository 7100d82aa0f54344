"""Figures: fonts for figure text that comes from the user (class folders named 猫 狗 鸟), log axes in plain numbers,
saving a figure whole, images as PNG data URLs (the page's maps and pictures), and the inside view's figure.

matplotlib's default font, DejaVu Sans, has no Chinese, Japanese or Korean glyphs: it draws them as empty boxes
and warns once per glyph. We bundle no font. A CJK font installed on the machine is found at run time and put
after the default family, and matplotlib (>= 3.6) falls back to it glyph by glyph, so Latin text looks as before.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.ticker import LogFormatter

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnlab.inference.explain import Explanation

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


def png_data_url(image: np.ndarray, compress_level: int = 6, channels_last: bool = False) -> str:
    """A uint8 image as a PNG data URL: (H, W) grey, or (C, H, W) as a model reads it with C 1 (grey) or 3 (RGB);
    with `channels_last`, (H, W, C) with C 3 (RGB) or 4 (RGBA). `compress_level`: zlib's, 0 to 9 (6, its default,
    unless speed matters more than bytes)."""
    from PIL import Image

    if channels_last:
        pixels = image
    else:
        pixels = image if image.ndim == 2 else (image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", compress_level=compress_level)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# The diverging colour scale of every feature map: -1 blue, 0 near-white, +1 red, straight lines between (the page's
# legend is a CSS gradient through the same three stops, so it matches the maps exactly).
DIVERGING = ("#2166ac", "#f7f7f7", "#b2182b")


def _stops() -> np.ndarray:
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in DIVERGING], np.float32)


_LUT = np.concatenate([
    np.vstack([np.interp(np.linspace(0, 1, 256), [0, 0.5, 1], _stops()[:, k]) for k in range(3)]).T,
    np.full((256, 1), 255.0)], axis=1).round().astype(np.uint8)  # 256 x RGBA


def diverging_rgba(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] (any shape) -> uint8 RGBA on the diverging scale (shape + (4,)): 0 is the middle colour."""
    index = np.clip(np.rint((np.asarray(values, np.float32) + 1) * 127.5), 0, 255).astype(np.intp)
    return _LUT[index]


def diverging_colormap():
    """The same scale as a matplotlib colormap, for colour bars."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(_LUT[:, :3] / 255.0, name="cnnlab-diverging")


def plot_inside(explanation: "Explanation", path: str | Path | None = None, title: str = "") -> "Figure":
    """The inside view as a matplotlib Figure (also written to `path` unless None), with the web page's stages and
    colours: the image and the probabilities (with nothing switched off as outlines when parts are), then a row per
    stage: its name, what it does, its shape and the arithmetic that gives it, and its maps on the diverging scale
    with their range; a block's row adds each branch's maps and share or each path's maps and norm (nothing for a
    part that is off); the logits as bars around zero. The stages in words (`explanation.lines`) are the figure's
    last panel, as the notebook prints them."""
    from matplotlib.figure import Figure  # not pyplot's: nothing to close or leak, no backend switched

    e = explanation
    shown = [layer for layer in e.layers if layer.maps is not None or layer.kind == "linear"]
    cols = 1 + max([len(layer.branches) or len(layer.paths) - 1 if layer.paths else len(layer.branches)
                    for layer in shown] + [1])
    rows = 1 + len(shown) + 1
    fig = Figure(figsize=(2.6 * cols, 2.3 * (rows - 1) + 0.16 * len(e.lines) + 0.5), layout="constrained")
    grid = fig.add_gridspec(rows, cols, height_ratios=[2.3] * (rows - 1) + [0.16 * len(e.lines) + 0.3])

    image = e.image if e.image.ndim == 2 else (e.image[0] if e.image.shape[0] != 3 else e.image.transpose(1, 2, 0))
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image, cmap="gray")
    ax.set_title(f"input {' × '.join(map(str, e.image.shape))}", fontsize=8)
    ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 1:])
    pos = range(len(e.classes))
    ax.bar(pos, e.probabilities, color="tab:blue", label="switched" if e.silenced else "probability")
    if e.silenced:
        ax.bar(pos, e.probabilities_full, fill=False, edgecolor="black", label="nothing off")
        ax.legend(fontsize=7)
    ax.set_xticks(list(pos), e.classes, fontsize=7, fontfamily=font_family(*e.classes))
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=7)

    def maps_panel(cell, maps, heading: str, colour: str = "black") -> None:
        ax = fig.add_subplot(cell)
        ax.set_axis_off()
        ax.set_title(heading, fontsize=7, color=colour)
        if maps is None:
            ax.text(0.5, 0.5, "off: gives nothing", ha="center", va="center", fontsize=8, color="tab:red",
                    transform=ax.transAxes)
            return
        atlas = maps.atlas.copy()
        atlas[atlas[..., 3] == 0] = (200, 204, 209, 255)  # gaps and empty slots grey: a dead map is white
        ax.imshow(atlas, interpolation="nearest")
        limit = max(maps.limits) if maps.limits else 0.0
        span = f"each map its own range, up to ±{limit:.3g}" if maps.scope == "map" else f"range ±{limit:.3g}"
        ax.text(0.5, -0.04, span, ha="center", va="top", fontsize=6, color="#57606a", transform=ax.transAxes)

    for r, layer in enumerate(shown, start=1):
        heading = f"{layer.name}: {' × '.join(map(str, layer.shape))}\n{layer.arithmetic}"
        if layer.maps is None:  # the logits, around zero
            ax = fig.add_subplot(grid[r, :])
            values = layer.values or []
            ax.bar(range(len(values)), values, color=["tab:blue" if v >= 0 else "tab:red" for v in values])
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xticks(range(len(values)), e.classes[:len(values)], fontsize=7, fontfamily=font_family(*e.classes))
            ax.set_title(f"{heading}  (logits, before softmax)", fontsize=8)
            ax.tick_params(labelsize=7)
            continue
        maps_panel(grid[r, 0], layer.maps, heading)
        views = [(b.maps, f"{b.name}: " + ("off" if b.silenced else f"share {100 * (b.share or 0):.0f}%"), b.silenced)
                 for b in layer.branches]
        views += [(p.maps, f"{p.name}: " + ("off" if p.silenced else f"norm {p.norm:.3g}"), p.silenced)
                  for p in layer.paths if p.part is not None]
        for c, (maps, label, off) in enumerate(views, start=1):
            maps_panel(grid[r, c], maps, label, "tab:red" if off else "black")
    ax = fig.add_subplot(grid[rows - 1, :])
    ax.set_axis_off()
    ax.text(0, 1, "\n".join(e.lines), ha="left", va="top", fontsize=6.5, family="monospace", transform=ax.transAxes)
    off = f" with {', '.join(e.silenced)} off" if e.silenced else ""
    heading = title or f"{e.model}{off}: {e.classes[e.top]} ({100 * e.probabilities[e.top]:.1f}%)"
    fig.suptitle(heading, fontfamily=font_family(heading))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
