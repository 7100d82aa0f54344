import subprocess
import sys

import matplotlib
import pytest

from cnnlab.plotting import INSTALL_HINT, font_family, installed_family


def test_latin_text_keeps_the_default_font_alone():
    assert font_family("resnet (default recipe)", "0", "T-shirt/top") == list(matplotlib.rcParams["font.family"])


def test_chinese_text_falls_back_to_an_installed_cjk_font_after_the_default():
    cjk = installed_family()
    if cjk is None:
        pytest.skip(f"no CJK font installed ({INSTALL_HINT})")
    assert font_family("猫", "dog") == [*matplotlib.rcParams["font.family"], cjk]


NO_CJK_FONT = """
import io
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cnnlab.plotting import font_family

for _ in range(2):
    fig, ax = plt.subplots()
    ax.set_xticks([0, 1, 2], ["猫", "狗", "鸟"], fontfamily=font_family("猫", "狗", "鸟", candidates=["No Such CJK Font"]))
    fig.tight_layout()
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
print("drawn")
"""


@pytest.mark.processes
def test_without_a_cjk_font_the_figure_is_drawn_and_the_user_told_once_what_to_install():
    # A fresh process, so the note is not already said; every warning shown, so a per-glyph one would surface.
    done = subprocess.run([sys.executable, "-W", "always", "-c", NO_CJK_FONT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "drawn"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert INSTALL_HINT in lines[0]


def test_cnnlab_bundles_no_font():
    # Fonts come from the machine (Debian's fonts-wqy-zenhei or fonts-noto-cjk), found at run time.
    from pathlib import Path

    import cnnlab

    package = Path(cnnlab.__file__).resolve().parent
    fonts = [p for p in package.rglob("*") if p.suffix.lower() in {".ttf", ".ttc", ".otf", ".woff", ".woff2"}]
    assert fonts == []


def _tick_labels(axis) -> list[str]:
    axis.axes.figure.canvas.draw()  # labels are set when the figure is drawn
    return [t.get_text() for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]


@pytest.mark.parametrize("epochs", [1, 12])
def test_curves_label_the_error_axis_in_plain_numbers_and_the_epochs_as_integers(epochs):
    from cnnlab.runs.rundir import plot_curves

    rows = [dict(epoch=e, train_loss=0.7 / e, train_acc=1 - 0.08 / e, val_loss=0.1 / e, val_acc=1 - 0.01 / e ** 0.5,
                 test_loss=0.1 / e, test_acc=1 - 0.009 / e ** 0.5) for e in range(1, epochs + 1)]
    fig = plot_curves(rows, None, title="resnet (default recipe)")
    ax_loss, ax_err = fig.axes
    labels = _tick_labels(ax_err.yaxis)
    assert len(labels) >= 3, labels  # minor ticks labelled too: the axis spans about one decade
    assert all("$" not in t and "e" not in t for t in labels), labels  # no mathtext, no 1e-01
    assert {float(t) for t in labels} >= {1.0, 2.0}, labels
    for ax in (ax_loss, ax_err):
        assert all(float(t).is_integer() for t in _tick_labels(ax.xaxis)), _tick_labels(ax.xaxis)


def test_png_data_urls_hold_the_image_as_a_model_reads_it():
    import base64
    import io

    import numpy as np
    from PIL import Image

    from cnnlab.plotting import png_data_url

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)

    def pixels(url: str) -> np.ndarray:
        head, data = url.split(",", 1)
        assert head == "data:image/png;base64"
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))

    assert np.array_equal(pixels(png_data_url(grey)), grey)
    assert np.array_equal(pixels(png_data_url(grey[None])), grey)  # (1, H, W): grey too
    assert np.array_equal(pixels(png_data_url(rgb, compress_level=1)), rgb.transpose(1, 2, 0))
    assert png_data_url(rgb, compress_level=0) != png_data_url(rgb)  # the level is zlib's, and it is used
