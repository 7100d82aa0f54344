"""The public Python API (cnnlab/__init__.py, cnnlab/api.py): what a student types in a notebook."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.data.sets.fashion_mnist import SPEC as FASHION_MNIST

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path | str = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.processes
def test_import_cnnlab_loads_neither_torch_nor_the_trainer():
    code = (
        "import sys, cnnlab\n"
        "print('torch' in sys.modules, 'cnnlab.train' in sys.modules)\n"
        "cnnlab.load, cnnlab.list_models(), cnnlab.list_datasets()\n"  # the trained-model layer alone: still no trainer
        "print('cnnlab.train' in sys.modules)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "False"]


@pytest.mark.processes
def test_subpackages_cannot_shadow_the_api():
    try_both = "import cnnlab\nfor name in ('train', 'models'):\n    try:\n        getattr(cnnlab, name)\n    except AttributeError as e:\n        print(e)\n"
    proc = _python(try_both)
    assert "cnnlab.fit(" in proc.stdout and "cnnlab.list_models()" in proc.stdout, proc.stdout + proc.stderr
    import cnnlab.models  # noqa: F401  (each sets the attribute of its name to the subpackage)
    import cnnlab.train.run  # noqa: F401

    assert callable(cnnlab.fit) and callable(cnnlab.list_models) and cnnlab.train.__name__ == "cnnlab.train"
    from cnnlab import train

    assert train is sys.modules["cnnlab.train"]


def test_fit_refuses_a_setting_it_does_not_have_before_loading_anything(tmp_path):
    with pytest.raises(TypeError, match=r"no setting stepz.*\bsteps\b"):
        cnnlab.fit("resnet", out=tmp_path, stepz=5)
    assert not any(tmp_path.iterdir())


def test_models_lists_the_registry_with_a_line_each():
    from cnnlab.models import list_models

    listed = cnnlab.list_models()
    assert list(listed) == list_models()
    assert all(line and "\n" not in line for line in listed.values())


def test_datasets_lists_what_train_dataset_accepts(tmp_path):
    from cnnlab.cli import build_parser

    listed = cnnlab.list_datasets()
    assert {"mnist", "fashion-mnist", "imagefolder:PATH"} <= set(listed)
    for name in listed:
        given = name.replace("PATH", str(tmp_path))
        assert build_parser().parse_args(["train", "--dataset", given]).dataset.name == given
    assert "clothing" in listed["fashion-mnist"] and "digits" in listed["mnist"]  # the entries' own summaries


def _prediction(probabilities: list[float]) -> cnnlab.Prediction:
    return cnnlab.Prediction(np.full((28, 28), 7, np.uint8), probabilities, FASHION_MNIST.classes)


def test_a_prediction_reads_as_class_names_not_pixels():
    pred = _prediction([0.05, 0.7, 0.2, 0.05] + [0.0] * 6)
    assert repr(pred) == "Prediction('Trouser', 70.0%; then 'Pullover' 20.0%, 'T-shirt/top' 5.0%)"
    assert (pred.name, pred.label) == ("Trouser", 1)
    first, second = pred.top(2)
    assert (first.name, first.index, first.probability) == ("Trouser", 1, 0.7)
    assert second.name == "Pullover"
    index, p = first  # the (index, probability) pair top() gave before it carried names
    assert (index, p) == (1, 0.7)
    assert pred.as_dict(1)["top"] == [{"class": 1, "name": "Trouser", "probability": 0.7}]


def _digit_png(path: Path) -> Path:
    pixels = np.zeros((60, 40), np.uint8)
    pixels[10:50, 18:24] = 255  # a "1", light on dark
    Image.fromarray(pixels).save(path)
    return path


def test_load_predicts_paths_arrays_and_lists(fashion_named_run, tmp_path):
    model = cnnlab.load(fashion_named_run, device="cpu")
    assert re.fullmatch(r"TrainedModel\(basic_cnn, Fashion-MNIST, 10 classes, test acc \d+\.\d\d%, .+\)", repr(model))
    assert str(fashion_named_run) in repr(model) and model.classes == FASHION_MNIST.classes

    png = _digit_png(tmp_path / "one.png")
    from_path = model.predict(png)
    assert isinstance(from_path, cnnlab.Prediction) and from_path.name in FASHION_MNIST.classes
    assert sum(from_path.probabilities) == pytest.approx(1.0, abs=1e-5)
    pixels = np.asarray(Image.open(png))
    assert model.predict(pixels).probabilities == pytest.approx(from_path.probabilities, abs=1e-6)
    assert model.predict(png.read_bytes()).probabilities == pytest.approx(from_path.probabilities, abs=1e-6)
    several = model.predict([png, pixels])
    assert [type(p) for p in several] == [cnnlab.Prediction] * 2
    assert len(model.predict(np.stack([pixels, 255 - pixels]))) == 2  # a stack of grey images is a batch


def test_evaluate_is_the_test_accuracy_of_the_logits(fashion_named_run, tiny_mnist):
    model = cnnlab.load(fashion_named_run, device="cpu")
    expected = (model.logits(tiny_mnist.test_images).argmax(1) == tiny_mnist.test_labels).float().mean().item()
    assert model.evaluate(tiny_mnist) == pytest.approx(expected)


def _renders(fig) -> bool:
    """What Jupyter does with a returned figure (IPython's print_figure): draw it through its canvas."""
    buf = io.BytesIO()
    fig.canvas.print_figure(buf, format="png")
    return buf.getvalue().startswith(b"\x89PNG")


def test_curves_come_back_as_a_figure_and_are_written_when_asked(fashion_named_run, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    model = cnnlab.load(fashion_named_run, device="cpu")
    fig = model.curves()
    assert isinstance(fig, Figure) and _renders(fig)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "error rate (100 - accuracy)"]
    assert model.curves(tmp_path / "c.png") is not None and (tmp_path / "c.png").stat().st_size > 0
    assert plt.get_fignums() == []  # nothing registered with pyplot: plotting many runs leaks no figures


def test_the_analysis_plots_return_their_figures(fashion_named_run, tiny_mnist, tmp_path_factory):
    import matplotlib.pyplot as plt

    from cnnlab.analysis.compare import plot_compare
    from cnnlab.analysis.depth import DepthResult, plot_depth
    from cnnlab.analysis.evaluation import evaluate_model, plot_confusion
    from cnnlab.runs import load_run

    out = tmp_path_factory.mktemp("figures")
    model = cnnlab.load(fashion_named_run, device="cpu")
    confusion = plot_confusion(evaluate_model(model, tiny_mnist), out / "confusion.png")
    compare = plot_compare([load_run(fashion_named_run)], None)
    depth = [DepthResult(d, r, [1.0, 0.5], [1.0, 0.5], 0.1, 0.9) for d in (2, 4) for r in (False, True)]
    grads, training = plot_depth(depth, None, out / "depth.png")
    assert all(_renders(f) for f in (confusion, compare, grads, training))
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "depth.png"]
    assert plt.get_fignums() == []


def _readme_example() -> tuple[Path, str]:
    """The first python block of the README's "Python API" section."""
    path = ROOT / "README.md"
    section = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", path.read_text(), re.S | re.M)
    assert section, "no '## Python API' section in README.md"
    return path, re.search(r"```python\n(.*?)```", section.group(1), re.S).group(1)


def test_the_readme_example_is_short_and_uses_the_api():
    _, code = _readme_example()
    assert 5 <= len(code.strip().splitlines()) <= 10
    assert "cnnlab.fit(" in code and "cnnlab.load(" in code and ".predict(" in code


@pytest.mark.processes  # the example in a fresh Python, training on the real MNIST
def test_the_readme_example_runs_as_written(real_mnist, tmp_path):
    source, code = _readme_example()
    Image.fromarray(real_mnist.test_images[0].numpy()).save(tmp_path / "digit.png")  # the picture it predicts
    proc = _python(code, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, f"{source}:\n{proc.stderr[-3000:]}"
    assert "TrainedModel(resnet, MNIST, 10 classes, test acc" in proc.stdout
    assert re.search(r"^Prediction\('\d', \d+\.\d%; then '\d' .*\) \d$", proc.stdout, re.M), proc.stdout
    assert len(list((tmp_path / "runs").iterdir())) == 1
