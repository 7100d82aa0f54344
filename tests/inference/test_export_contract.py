"""What an export of an image-folder model says about itself: the shapes printed and stored in the file are its
own (not MNIST's), its class names and pixel convention travel with it, and a TorchScript export is never taken
for a checkpoint."""

import json
import re
import warnings

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data.tensors.batching import normalize
from cnnlab.inference.export import export_model
from cnnlab.runs import Checkpoint, CheckpointError, load

from ..support.runs import SHAPES, SIZE, train_on_shapes


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    return train_on_shapes(tmp_path_factory.mktemp("folder"))


def _pytorch_logits(run_dir, pixels: np.ndarray) -> np.ndarray:
    trained = load(run_dir, "cpu")
    cfg = trained.config
    with torch.no_grad():
        return trained.network(normalize(torch.from_numpy(pixels).to(torch.uint8), cfg.norm_mean, cfg.norm_std)).numpy()


def test_onnx_export_of_an_image_folder_model_prints_and_stores_its_own_contract(shapes_run, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "shapes.onnx"
    assert main(["export", str(shapes_run), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    shape = re.search(r"\(N, (\d+), (\d+), (\d+)\) in, \(N, (\d+)\) logits out", printed)
    assert shape, printed
    channels, height, width, classes = map(int, shape.groups())
    assert (channels, height, width, classes) == (3, SIZE, SIZE, len(SHAPES))

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["input_shape"]) == ["N", 3, SIZE, SIZE]
    assert json.loads(meta["output_shape"]) == ["N", len(SHAPES)]
    assert json.loads(meta["classes"]) == sorted(SHAPES)  # class folders are labelled in sorted order
    assert "RGB" in meta["pixels"] and "folder" in meta["pixels"] and "white on black" not in meta["pixels"]
    assert meta["input_range"] == "0..255" and "inside the graph" in meta["standardisation"]
    assert json.loads(meta["tta_hflip"]) is False

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 256, (5, channels, height, width)).astype(np.float32)
    (logits,) = session.run(None, {"pixels": pixels})
    assert logits.shape == (5, classes)
    np.testing.assert_allclose(logits, _pytorch_logits(shapes_run, pixels), rtol=1e-4, atol=1e-4)  # another runtime's kernels


def test_export_help_states_no_fixed_shape(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert "(N, C, S, S)" in text and "torchscript.pt" in text
    assert "shape (N, 1, 28, 28), white on black, and returns" not in text


def test_a_torchscript_export_is_named_as_one_and_refused_as_a_checkpoint(shapes_run, capsys):
    assert main(["export", str(shapes_run), "--format", "torchscript"]) == 0
    assert f"(N, 3, {SIZE}, {SIZE}) in, (N, {len(SHAPES)}) logits out" in capsys.readouterr().out
    path = shapes_run / "basic_cnn.torchscript.pt"
    extra = {"cnnlab.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(json.loads(extra["cnnlab.json"])["classes"]) == sorted(SHAPES)
    assert scripted(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, len(SHAPES))

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="is a TorchScript export, not a checkpoint: run it with torch.jit.load"):
            Checkpoint.read(path)
    assert seen == []  # torch.load's own warning about such files is not reached

    code = main(["predict", str(path), "any.png"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().splitlines() == [
        f"cnnlab predict: error: {path} is a TorchScript export, not a checkpoint: run it with torch.jit.load, "
        "or pass the run directory or its best.pt"
    ]


def test_an_export_never_replaces_a_checkpoint(shapes_run, capsys):
    before = (shapes_run / "last.pt").read_bytes()
    code = main(["export", str(shapes_run), "--format", "torchscript", "--out", str(shapes_run / "last.pt")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "is a PyTorch checkpoint" in err
    assert (shapes_run / "last.pt").read_bytes() == before
    assert export_model(shapes_run, "torchscript", shapes_run / "exported.pt").path.stat().st_size > 0  # --out still works
