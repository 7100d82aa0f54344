"""Export a trained model to ONNX or TorchScript, for use without cnnlab.

The exported graph takes what the data set's files hold, not what the network's first layer takes:
float32 images of shape (N, C, S, S) — (N, 1, 28, 28) for MNIST and Fashion-MNIST — with pixel values
0..255 (MNIST: white digit on black). The standardisation the model was trained with is part of the graph,
so nobody has to know the data set's mean and standard deviation; so is the mirror-image averaging of a
model evaluated that way (tta_hflip). The batch dimension is dynamic. Output: (N, classes) logits (softmax
them for probabilities).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from cnnlab.data.batching import MNIST_MEAN, MNIST_STD
from cnnlab.train import checkpoint_dir, load_model, tta_forward

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportError(Exception):
    """An export that cannot be done; the message says why and what to install or change."""


class PixelInput(nn.Module):
    """The model behind its input standardisation: 0..255 pixels in, logits out. With tta_hflip the logits
    are averaged with the mirror image's, as the model was evaluated in training."""

    def __init__(self, model: nn.Module, mean: float = MNIST_MEAN, std: float = MNIST_STD, tta_hflip: bool = False) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = mean, std  # the training data's pixel statistics
        self.tta_hflip = tta_hflip

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels / 255.0 - self.mean) / self.std
        return tta_forward(self.model, x, self.tta_hflip)


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Write the checkpoint's model as `fmt` ('onnx' or 'torchscript') to `out` (default: beside the
    checkpoint, named after its model). The file appears whole or not at all."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from: {', '.join(FORMATS)}")
    model, cfg, state = load_model(checkpoint, "cpu")
    model = PixelInput(model.to(memory_format=torch.contiguous_format), cfg.norm_mean, cfg.norm_std, cfg.tta_hflip).eval()
    kw = state.get("model_kwargs", {})
    example = torch.zeros(2, kw.get("in_channels", 1), kw.get("image_size", 28), kw.get("image_size", 28))
    if out is None:
        out = checkpoint_dir(checkpoint) / f"{cfg.model}{FORMATS[fmt]}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        if fmt == "onnx":
            _onnx(model, example, tmp)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript is in maintenance; its deprecation notes are not for the user
                traced = torch.jit.trace(model, example)
            traced.save(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _onnx(model: nn.Module, example: torch.Tensor, path: str) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx and onnxscript packages: pip install 'cnnlab[onnx]'") from None
    batch = torch.export.Dim("batch", min=1, max=65536)
    onnx_log = logging.getLogger("torch.onnx")  # it notes each torchvision operator it cannot register
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["pixels"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    finally:
        onnx_log.setLevel(level)
    program.save(path)
