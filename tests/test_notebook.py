"""docs/lecture.ipynb, the teaching notebook: committed with the outputs of a full run (python docs/run_notebook.py), so
that it reads on GitHub without running it, and executed from top to bottom with a small training budget, so that it
cannot go stale as the API changes."""

import json
import re
from pathlib import Path

import pytest

from cnnlab.models import create_model
from cnnlab.models.stages import stage_lines

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "lecture.ipynb"


def _text(output) -> str:
    """What an output shows as text: a stream's lines, a result's or a display's text/plain, an error's traceback
    (images are left out: their base64 can spell anything)."""
    data = output.get("data", {})
    return "".join(output.get("text", "")) + "".join(data.get("text/plain", "")) + "\n".join(output.get("traceback", []))


def _kinds(cells) -> list[list[tuple]]:
    """For each code cell, its outputs in order: a stream by its name, anything else by its type and MIME types."""
    return [[(o["output_type"], o.get("name") or tuple(sorted(o.get("data", {})))) for o in c["outputs"]]
            for c in cells if c["cell_type"] == "code"]


def _before_training(cells) -> list[str]:
    """What the code cells before the first training print: shapes, the stages with their arithmetic and the cost
    counts, the same on every machine."""
    code = [c for c in cells if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "cnnlab.fit(" in "".join(c["source"]))
    return ["".join(_text(o) for o in c["outputs"]) for c in code[:first]]


def test_the_notebook_is_committed_with_the_outputs_of_a_full_run_and_nothing_of_this_machine():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    # Every code cell prints or draws, run top to bottom in one kernel.
    assert all(c["outputs"] for c in code), [c["source"][:1] for c in code if not c["outputs"]]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    figures = [c for c in code if any("image/png" in o.get("data", {}) for o in c["outputs"])]
    assert len(figures) == 3
    text = "\n".join(_text(o) for c in code for o in c["outputs"])
    assert "after 300 steps" in text  # the notebook's own STEPS, not the tests' 20
    assert "IProgress" not in text  # tqdm's warning when ipywidgets is missing
    assert not re.search(r"(?<![\w.])/(work|tmp|root|home|Users)\b", text), "an absolute path of this machine"
    # Nothing that changes at every execution: the time each cell ran, widget state.
    assert not [c for c in code if "execution" in c["metadata"]] and "widgets" not in notebook["metadata"]


@pytest.mark.slow
@pytest.mark.processes  # a Jupyter kernel
def test_the_lecture_notebook_runs_from_top_to_bottom(real_mnist, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("CNNLAB_NOTEBOOK_STEPS", "20")  # the kernel inherits the environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The notebook's working directory is a temporary one, so its runs land there; each cell gets 5 minutes.
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", coalesce_streams=True,
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

    # The committed outputs (docs/run_notebook.py, 300 steps) are this run's: the same outputs of the same kinds in
    # every cell, and the same lines wherever training plays no part.
    committed = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    assert _kinds(committed) == _kinds(notebook.cells)
    assert _before_training(committed) == _before_training(notebook.cells)
