"""Run docs/lecture.ipynb from top to bottom and write it back with its outputs, as the repository keeps it.

    python docs/run_notebook.py          # STEPS = 300, the notebook's default: 1-2 min on 2 CPU cores (49 s, 124 s)

Needs nbclient, nbformat, ipykernel and ipywidgets (`make dev`, or `pip install '.[notebook]'`): without ipywidgets,
tqdm's "IProgress not found" warning would be written into the first cell's output. The notebook runs in a temporary
working directory, so its runs/ are left there and deleted. What changes from one execution to the next and says
nothing about the lecture is left out: the time each cell ran, the kernel's version details, widget state.
Numbers that come from training (accuracies, probabilities, the inside-view figures) depend on the machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent / "lecture.ipynb"


def main() -> int:
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    metadata = dict(notebook.metadata)  # as committed: nbclient adds the kernel's language_info version
    # The notebook's own default length, whatever this shell has set for the tests.
    os.environ.pop("CNNLAB_NOTEBOOK_STEPS", None)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnlab-notebook-") as work:
        # coalesce_streams: a cell's printed lines are one output, however the kernel happened to send them
        client = nbclient.NotebookClient(notebook, timeout=1800, kernel_name="python3", record_timing=False,
                                         coalesce_streams=True, store_widget_state=False,
                                         resources={"metadata": {"path": work}})
        client.execute()
    notebook.metadata = nbformat.from_dict(metadata)
    nbformat.validate(notebook)
    nbformat.write(notebook, NOTEBOOK)
    print(f"{NOTEBOOK.name}: executed in {time.perf_counter() - start:.0f}s and written with its outputs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
