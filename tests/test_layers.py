"""The layers hold: whatever reads a trained model does so through cnnlab.runs, never through the trainer."""

import subprocess
import sys

import pytest


@pytest.mark.processes
def test_inference_serving_and_evaluation_import_nothing_of_the_trainer():
    code = (
        "import cnnlab.inference, cnnlab.inference.predictor, cnnlab.inference.export, cnnlab.serve.app, "
        "cnnlab.analysis.evaluation, cnnlab.analysis.branches, cnnlab.inference.explain, cnnlab.analysis.compare, sys; "
        "print(sorted(m for m in sys.modules if m.startswith('cnnlab.train')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
