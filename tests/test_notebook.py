"""docs/lecture.ipynb, the teaching notebook, executed from top to bottom with a small training budget, so that it
cannot go stale as the API changes."""

import json
from pathlib import Path

import pytest

from cnnlab.models import create_model
from cnnlab.models.stages import stage_lines

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "lecture.ipynb"


def test_the_notebook_is_committed_without_outputs():
    # Outputs would hold one machine's figures and timings, and a diff of images at every change.
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    assert [c for c in cells if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])] == []


@pytest.mark.slow
@pytest.mark.processes  # a Jupyter kernel
def test_the_lecture_notebook_runs_from_top_to_bottom(real_mnist, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("CNNLAB_NOTEBOOK_STEPS", "20")  # the kernel inherits the environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The notebook's working directory is a temporary one, so its runs land there; each cell gets 5 minutes.
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "concatenated   -> (1, 88, 12, 12)" in text
    # the stages the notebook prints are the page's and plot_inside's (cnnlab.models.stages.lines), with the
    # lecture's arithmetic
    for model in ("inception_net", "resnet"):
        for line in stage_lines(create_model(model)):
            assert line in text, line
    assert "28 − 5 + 1 = 24" in text and "16 + 24 + 24 + 24 = 88" in text and "88 × 4 × 4 = 1408" in text
    assert "120,422,400" in text and "12,443,648" in text
    assert "after 20 steps" in text
    assert "incep1.5x5 off:" in text and "rblock2.skip off:" in text
    figures = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 3  # the inside view of inception_net, of resnet, and with incep1.5x5 off
    runs = sorted(p.name.rsplit("-", 1)[-1] for p in (tmp_path / "runs").iterdir())
    assert runs == ["basic_cnn", "inception_net", "resnet"]
