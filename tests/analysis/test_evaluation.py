import pytest
import torch

from cnnlab.analysis.evaluation import confusion_matrix, evaluate_model, plot_confusion
from cnnlab.train import fit, make_config
from cnnlab.runs import load


def test_confusion_matrix_counts_true_by_predicted():
    preds = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 2, 2, 2, 0])
    cm = confusion_matrix(preds, labels, 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]


def test_evaluate_model_agrees_with_training_and_plots(tiny_mnist, tmp_path):
    result = fit(make_config("basic_cnn", epochs=1, batch_size=100, val_size=100, device="cpu"), tiny_mnist, tmp_path, progress=False)
    ev = evaluate_model(load(result.run_dir, "cpu"), tiny_mnist)
    n = len(tiny_mnist.test_labels)
    assert round(ev.accuracy * n) == round(result.test_acc * n)  # best.pt is the epoch the run reported
    assert ev.confusion.sum() == len(tiny_mnist.test_labels)
    assert len(ev.per_class) == 10
    assert all(ev.confusion[t, p] == n for t, p, n in ev.confused_pairs)
    assert [n for _, _, n in ev.confused_pairs] == sorted((n for _, _, n in ev.confused_pairs), reverse=True)
    plot_confusion(ev, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chinese_class_names_are_drawn_with_a_cjk_font(tmp_path, caplog):
    # Class folders named 猫 狗 鸟: DejaVu Sans has no glyph for them and would draw empty boxes, warning per glyph.
    import logging
    import warnings

    from cnnlab.analysis.evaluation import Evaluation
    from cnnlab.plotting import INSTALL_HINT, installed_family

    if installed_family() is None:
        pytest.skip(f"no CJK font installed ({INSTALL_HINT})")
    cm = torch.tensor([[5, 1, 0], [2, 4, 0], [0, 0, 6]])
    ev = Evaluation("basic_cnn", 15 / 18, [5 / 6, 4 / 6, 1.0], cm, [(1, 0, 2), (0, 1, 1)], ("猫", "狗", "鸟"))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="matplotlib"):
        warnings.simplefilter("always")
        fig = plot_confusion(ev, tmp_path / "c.png")
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []
    assert [r.getMessage() for r in caplog.records if "font" in r.getMessage()] == []
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The names are set in the CJK family, a font of the machine's that has their glyphs (none is bundled).
    from pathlib import Path

    from matplotlib import font_manager

    import cnnlab

    cjk = installed_family()
    ax = fig.axes[0]
    assert {label.get_fontfamily()[-1] for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]} == {cjk}
    font = font_manager.findfont(font_manager.FontProperties(family=cjk), fallback_to_default=False)
    assert {ord(c) for c in "猫狗鸟"} <= set(font_manager.get_font(font).get_charmap())
    assert not Path(font).resolve().is_relative_to(Path(cnnlab.__file__).resolve().parent)


def test_each_count_is_written_in_the_colour_that_reads_on_its_cell_and_the_colour_bar_counts_whole_numbers():
    import re

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb

    from cnnlab.analysis.evaluation import Evaluation

    # Mistakes colour the cells (the diagonal is left white): 3 of them at (0, 1) is the darkest red, 1 a light one.
    cm = torch.tensor([[40, 3, 1], [0, 35, 1], [1, 0, 38]])
    ev = Evaluation("basic_cnn", 113 / 119, [40 / 44, 35 / 36, 38 / 39], cm, [(0, 1, 3), (0, 2, 1)], ("0", "1", "2"))
    fig = plot_confusion(ev, None)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3] / 255
    ax, bar = fig.axes

    def luminance(rgb) -> float:  # WCAG 2's relative luminance
        c = np.asarray(rgb, dtype=float)
        return float(np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4) @ [0.2126, 0.7152, 0.0722])

    def cell(t: int, p: int) -> float:  # the cell's colour as drawn, read beside its number
        x, y = ax.transData.transform((p + 0.35, t + 0.35))
        return luminance(pixels[round(pixels.shape[0] - y), round(x)])

    texts = {(round(s.get_position()[1]), round(s.get_position()[0])): luminance(to_rgb(s.get_color())) for s in ax.texts}
    assert sorted(texts) == [(t, p) for t in range(3) for p in range(3) if cm[t, p]]
    assert cell(0, 1) < 0.1 and texts[(0, 1)] > 0.9  # the darkest cell: light text
    assert cell(0, 2) > 0.4 and texts[(0, 2)] < 0.2 and texts[(1, 2)] < 0.2  # a light cell: dark text
    assert all(cell(k, k) > 0.9 and texts[(k, k)] < 0.2 for k in range(3))  # the white diagonal: dark (dimmed) text
    for (t, p), text in texts.items():  # WCAG's contrast for small text: at least 4.5 to 1
        light, dark = max(text, cell(t, p)), min(text, cell(t, p))
        assert (light + 0.05) / (dark + 0.05) >= 4.5, (t, p)

    ticks = [label.get_text() for label in bar.yaxis.get_ticklabels() if label.get_text()]
    assert len(ticks) >= 2 and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
