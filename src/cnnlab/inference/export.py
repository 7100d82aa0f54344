"""Export a trained model to ONNX or TorchScript, for use without cnnlab.

The exported graph takes what the data set's files hold, not what the network's first layer takes:
float32 images of shape (N, C, S, S) — (N, 1, 28, 28) for MNIST and Fashion-MNIST, the folder's channels and
size for an image-folder model — with pixel values 0..255 (MNIST: white digit on black). The standardisation
the model was trained with is part of the graph, so nobody has to know the data set's mean and standard
deviation; so is the mirror-image averaging of a model evaluated that way (tta_hflip). The batch dimension is
dynamic. Output: (N, classes) logits (softmax them for probabilities).

The file carries this contract: the shapes, the class names and the pixel convention, as ONNX metadata_props
or, in a TorchScript archive, as the extra file cnnlab.json (torch.jit.load(path, _extra_files={"cnnlab.json":
""})). Exports are named <model>.onnx and <model>.torchscript.pt, never like a checkpoint.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from cnnlab.atomic import atomic_write_bytes
from cnnlab.data.sets import mnist
from cnnlab.data.sets.registry import lookup
from cnnlab.errors import CnnlabError
from cnnlab.runs.checkpoint import archive_kind, checkpoint_dir
from cnnlab.runs.forward import tta_forward
from cnnlab.runs.trained import TrainedModel, load

# File name endings. A TorchScript archive is a zip like a checkpoint; its name says which it is.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
TORCHSCRIPT_METADATA = "cnnlab.json"  # the extra file of a TorchScript export that holds Contract.metadata()


class ExportError(CnnlabError):
    """An export that cannot be done; the message says why and what to install or change."""


class PixelInput(nn.Module):
    """The model behind its input standardisation: 0..255 pixels in, logits out. With tta_hflip the logits
    are averaged with the mirror image's, as the model was evaluated in training."""

    def __init__(self, model: nn.Module, mean: float = mnist.MEAN, std: float = mnist.STD, tta_hflip: bool = False) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = mean, std  # the training data's pixel statistics
        self.tta_hflip = tta_hflip

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels / 255.0 - self.mean) / self.std
        return tta_forward(self.model, x, self.tta_hflip)


@dataclass(frozen=True)
class Contract:
    """What an exported model takes and returns, read off its checkpoint."""

    model: str
    dataset: str
    channels: int
    size: int  # pixels a side
    classes: tuple[str, ...]  # names, by logit index
    mean: float  # the standardisation inside the graph, on pixels scaled to 0..1
    std: float
    tta_hflip: bool  # the logits are averaged with the mirror image's, inside the graph

    @classmethod
    def of(cls, trained: TrainedModel) -> Contract:
        cfg, kw = trained.config, trained.model_kwargs
        return cls(cfg.model, cfg.dataset, kw["in_channels"], kw["image_size"], trained.classes,
                   cfg.norm_mean, cfg.norm_std, cfg.tta_hflip)

    def summary(self) -> str:
        return (f"float32 pixels 0..255 (N, {self.channels}, {self.size}, {self.size}) in, "
                f"(N, {len(self.classes)}) logits out")

    def pictures(self) -> str:
        """How the pixels are laid out, in words."""
        colour = "grey" if self.channels == 1 else "RGB"
        return f"{colour} {self.size}x{self.size}, {lookup(self.dataset).entry.pixels}"

    def metadata(self) -> dict[str, str]:
        """The contract as string pairs, for ONNX metadata_props and the TorchScript extra file."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "input": "pixels",
            "input_shape": json.dumps(["N", self.channels, self.size, self.size]),
            "input_dtype": "float32",
            "input_range": "0..255",
            "output": "logits",
            "output_shape": json.dumps(["N", len(self.classes)]),
            "classes": json.dumps(list(self.classes)),
            "pixels": self.pictures(),
            "standardisation": f"inside the graph: (pixels / 255 - {self.mean:.6g}) / {self.std:.6g}",
            "tta_hflip": json.dumps(self.tta_hflip),
        }


@dataclass(frozen=True)
class Exported:
    path: Path
    contract: Contract


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None, device: str = "cpu",
                 say: Callable[[str], object] = lambda line: None) -> Exported:
    """Write the checkpoint's model as `fmt` ('onnx' or 'torchscript') to `out` (default: beside the
    checkpoint, named <model>.onnx or <model>.torchscript.pt), its contract in the file's metadata. The file
    appears whole or not at all (a failed write is an atomic.WriteError, the previous file kept). It is traced on
    `device`: the CPU by default, since a TorchScript file traced on a GPU runs only there. `say` is told, once
    the checkpoint is read, what is under way: tracing and writing take seconds with nothing to count."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from: {', '.join(FORMATS)}")
    trained = load(checkpoint, device)
    cfg, contract = trained.config, Contract.of(trained)
    model = PixelInput(trained.network.to(memory_format=torch.contiguous_format), cfg.norm_mean, cfg.norm_std, cfg.tta_hflip).eval()
    example = torch.zeros(2, contract.channels, contract.size, contract.size, device=next(model.parameters()).device)
    out = Path(out) if out is not None else checkpoint_dir(checkpoint) / f"{cfg.model}{FORMATS[fmt]}"
    if out.is_file() and archive_kind(out) == "pickle":
        raise ExportError(f"{out} is a PyTorch checkpoint; an export does not replace one (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"exporting {cfg.model} as {'ONNX through torch.export' if fmt == 'onnx' else 'TorchScript'} to {out} ...")
    if fmt == "onnx":
        _onnx(model, example, out, contract.metadata())
    else:
        _torchscript(model, example, out, contract.metadata())
    return Exported(out, contract)


def _torchscript(model: nn.Module, example: torch.Tensor, out: Path, metadata: dict[str, str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is in maintenance; its deprecation notes are not for the user
        traced = torch.jit.trace(model, example)
        # Into memory first: torch.jit.save writing a file that fails (a full disk) aborts the process in C++.
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata, indent=1)})
    atomic_write_bytes(out, buf.getbuffer())


def _onnx(model: nn.Module, example: torch.Tensor, out: Path, metadata: dict[str, str]) -> None:
    try:
        import onnx
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
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    atomic_write_bytes(out, proto.SerializeToString())  # cnnlab's models are far below protobuf's 2 GB limit
