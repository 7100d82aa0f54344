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
