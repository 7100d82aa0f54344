"""A trained model in use: predictions on pictures of digits, and exports that compute what PyTorch does."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data.sets.mnist import MEAN as MNIST_MEAN, STD as MNIST_STD
from cnnlab.data.tensors.batching import normalize
from cnnlab.inference.export import ExportError, export_model
from cnnlab.inference.predictor import Predictor
from cnnlab.models import list_models
from cnnlab.runs import CheckpointError, load
from cnnlab.train import fit, make_config

from ..support.data import synthetic_mnist
from ..support.pictures import off_centre_dark_on_light, one_per_class, png_bytes


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Callable[[str], Path]:
    """tiny_run(model): the run directory of a registered model trained 20 steps on synthetic noise (made once per
    model). An export must compute what PyTorch computes whatever the weights, so no real data is needed; 20 steps
    rather than 2 so that every network's logits already differ between pictures (a deep unit that halves its
    shortcut, res_scaling, gives nearly the same logits for every picture after 2)."""
    runs: dict[str, Path] = {}

    def run_of(model: str) -> Path:
        if model not in runs:
            # float32 steps on every CPU (amp off: a CPU with bfloat16 instructions would train in bfloat16), so
            # that the check of the logits' spread in _assert_same_logits meets the same weights everywhere
            cfg = make_config(model, steps=20, batch_size=50, val_size=100, device="cpu", amp="off")
            runs[model] = fit(cfg, synthetic_mnist(), out_root=tmp_path_factory.mktemp(model), progress=False).run_dir
        return runs[model]

    return run_of


@pytest.mark.slow  # needs the resnet trained on the real MNIST
def test_the_model_reads_test_digits_drawn_big_dark_and_off_centre(trained_resnet, real_mnist):
    predictor = Predictor(load(trained_resnet, "cpu"))
    for i in one_per_class(real_mnist):
        label = int(real_mnist.test_labels[i])
        pred = predictor.predict(png_bytes(off_centre_dark_on_light(real_mnist.test_images[i].numpy())))
        assert pred.top(1)[0][0] == label, (i, label, pred.top(3))
        assert sum(pred.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert [p for _, p in pred.top(3)] == sorted((p for _, p in pred.top(3)), reverse=True)


@pytest.mark.slow
def test_predictor_reports_what_the_checkpoint_records(trained_resnet):
    info = Predictor(load(trained_resnet, "cpu")).info
    assert info["model"] == "resnet" and info["parameters"] == 41514
    assert 0.98 < info["test_accuracy"] <= 1.0


def test_a_checkpoint_that_is_not_one_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load(bad, "cpu")


def _pytorch_logits(run_dir, pixels: torch.Tensor) -> torch.Tensor:
    model = load(run_dir, "cpu").network
    with torch.no_grad():
        return model(normalize(pixels.to(torch.uint8), MNIST_MEAN, MNIST_STD))


@pytest.mark.slow
def test_onnx_export_matches_pytorch_on_real_test_images(trained_resnet, real_mnist, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = export_model(trained_resnet, "onnx", tmp_path / "m.onnx").path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 256):  # the batch dimension is free
        pixels = real_mnist.test_images[:batch].unsqueeze(1)
        (onnx_logits,) = session.run(None, {"pixels": pixels.float().numpy()})
        expected = _pytorch_logits(trained_resnet, pixels).numpy()
        assert onnx_logits.shape == (batch, 10)
        # another runtime, other kernels: equal to float32 rounding of logits of up to ~20, not bit for bit
        np.testing.assert_allclose(onnx_logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_torchscript_export_matches_pytorch(trained_resnet, real_mnist, tmp_path):
    path = export_model(trained_resnet, "torchscript", tmp_path / "m.pt").path
    scripted = torch.jit.load(str(path))
    pixels = real_mnist.test_images[:64].unsqueeze(1)
    with torch.no_grad():
        got = scripted(pixels.float())
    assert (got - _pytorch_logits(trained_resnet, pixels)).abs().max() <= 1e-4


def test_a_failed_export_leaves_the_previous_file_whole(tiny_run, tmp_path, monkeypatch):
    run_dir = tiny_run("basic_cnn")
    target = tmp_path / "m.pt"
    target.write_bytes(b"an earlier export")

    def broken_trace(*args, **kwargs):
        raise RuntimeError("tracing failed")

    monkeypatch.setattr(torch.jit, "trace", broken_trace)  # torch's tracer, not our code, fails midway
    with pytest.raises(RuntimeError, match="tracing failed"):
        export_model(run_dir, "torchscript", target)
    assert target.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    with pytest.raises(ExportError, match="unknown format"):
        export_model(run_dir, "tflite", tmp_path / "m.tflite")


def test_an_export_of_a_mirror_averaged_model_averages_in_the_graph(tiny_mnist, tmp_path):
    from cnnlab.train import fit, make_config
    from cnnlab.runs import predict_logits

    cfg = make_config("basic_cnn", epochs=1, batch_size=50, val_size=100, device="cpu", hflip=True, tta_hflip=True)
    run_dir = fit(cfg, tiny_mnist, out_root=tmp_path, progress=False).run_dir
    exported = export_model(run_dir, "torchscript", tmp_path / "m.pt")
    assert exported.contract.tta_hflip and "mirror" not in exported.contract.summary()  # the shapes stay the same
    scripted = torch.jit.load(str(exported.path))
    trained = load(run_dir, "cpu")
    model, saved_cfg = trained.network, trained.config
    pixels = tiny_mnist.test_images[:32]
    with torch.no_grad():
        got = scripted(pixels.unsqueeze(1).float())
    assert (got - predict_logits(model, pixels, saved_cfg)).abs().max() <= 1e-4
    saved_cfg.tta_hflip = False
    assert (got - predict_logits(model, pixels, saved_cfg)).abs().max() > 1e-3  # the averaging is in the graph


# ---- every registered model, both formats: the exported graph computes the trained model's logits ---------------

# Noise images none of the tiny runs saw, from black to full contrast: pictures this different give logits that
# differ by far more than the tolerance below, even from a model trained two steps (checked in _assert_same_logits).
PIXELS = (synthetic_mnist(train=0, test=9, seed=7).test_images * torch.linspace(0, 1, 9).view(-1, 1, 1)).to(torch.uint8)


def _assert_same_logits(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal to float32 rounding, not bit for bit (another runtime's kernels, or TorchScript's): within 1e-4 of the
    logits' size, which is about 0.1 for a barely trained model and 20 for a trained one."""
    atol = 1e-4 * float(np.abs(expected).max())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=atol)
    if len(expected) > 1:  # the comparison can see a wrong graph: the pictures' logits differ by far more than atol
        assert float(np.ptp(expected, axis=0).max()) > 20 * atol


@pytest.mark.parametrize("model", list_models())
def test_the_onnx_export_of_every_model_computes_its_pytorch_logits(tiny_run, model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run_dir = tiny_run(model)
    path = export_model(run_dir, "onnx", tmp_path / f"{model}.onnx").path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    trained = load(run_dir, "cpu")
    for batch in (1, len(PIXELS)):  # the batch dimension is free
        (got,) = session.run(None, {"pixels": PIXELS[:batch].unsqueeze(1).float().numpy()})
        _assert_same_logits(got, trained.logits(PIXELS[:batch]).numpy())


@pytest.mark.parametrize("model", list_models())
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_the_torchscript_export_of_every_model_computes_its_pytorch_logits(tiny_run, model, tmp_path):
    run_dir = tiny_run(model)
    scripted = torch.jit.load(str(export_model(run_dir, "torchscript", tmp_path / f"{model}.pt").path))
    trained = load(run_dir, "cpu")
    for batch in (1, len(PIXELS)):
        with torch.no_grad():
            got = scripted(PIXELS[:batch].unsqueeze(1).float())
        _assert_same_logits(got.numpy(), trained.logits(PIXELS[:batch]).numpy())
