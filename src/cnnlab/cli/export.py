"""cnnlab export: a trained model as ONNX or TorchScript, with its input contract stored in the file."""

from __future__ import annotations

import argparse

from cnnlab.cli.args import add_checkpoint, add_device, use_device

HELP = "write the model as ONNX or TorchScript"
EPILOG = (
    "examples:\n  cnnlab export runs/20260101-120000-resnet --format onnx\n"
    "  cnnlab export runs/20260101-120000-resnet/best.pt --format torchscript --out resnet.torchscript.pt\n\n"
    "The exported model takes float32 pixels 0..255 of shape (N, C, S, S) and returns (N, classes) logits:\n"
    "(N, 1, 28, 28) and 10 for MNIST, white on black; an image-folder model takes its folder's channels and\n"
    "size. The standardisation is inside the graph and the batch size is free. export prints the shapes and\n"
    "stores them, the class names and the pixel convention in the file (ONNX metadata_props; TorchScript:\n"
    "the extra file cnnlab.json)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="file format (required)")
    p.add_argument(
        "--out", help="output file (default: <model>.onnx or <model>.torchscript.pt beside the checkpoint)",
    )
    add_device(p, "cpu")


def run(args: argparse.Namespace) -> int:
    from cnnlab.inference.export import TORCHSCRIPT_METADATA, export_model

    # what is under way, on stdout with the lines that follow it: stderr holds a failure's one line alone
    done = export_model(args.checkpoint, args.format, args.out, use_device(args), say=lambda line: print(line, flush=True))
    print(f"wrote {done.path} ({done.path.stat().st_size:,} bytes): {done.contract.summary()}")
    print(f"pixels: {done.contract.pictures()}; standardisation{' and mirror averaging' if done.contract.tta_hflip else ''} "
          "inside the graph")
    where = "its metadata_props" if args.format == "onnx" else f"its extra file {TORCHSCRIPT_METADATA}"
    print(f"class names, shapes and pixel convention are stored in the file ({where})")
    return 0
