"""cnnlab predict: classify your own images with a trained model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnlab.cli.args import UsageError, add_checkpoint, add_device, in_range, use_device

HELP = "classify your own images (digits, clothes, or an image-folder model's classes)"
EPILOG = ("examples:\n  cnnlab predict runs/20260101-120000-resnet photo.jpg drawing.png\n"
          "  cnnlab predict runs/20260101-120000-resnet *.png --json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab.config import Range

    add_checkpoint(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...; any size, dark on light or light on dark)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout instead of text (default: off)")
    p.add_argument("--top", type=in_range(Range(1, 1000, whole=True)), default=3, help="classes to show per image (default: 3)")
    p.add_argument("--save-input", metavar="DIR",
                   help="also write the image the model saw (28x28 for MNIST), per image, as DIR/<file name>-<W>x<H>.png: "
                   "a.png -> a.png-28x28.png, a.jpg -> a.jpg-28x28.png; a name given again gets -2, -3 (default: off)")
    add_device(p, "cpu")


def run(args: argparse.Namespace) -> int:
    import json

    from cnnlab.data.tensors.pictures import ImageError
    from cnnlab.inference.predictor import Predictor, input_names
    from cnnlab.runs import load

    predictor = Predictor(load(args.checkpoint, use_device(args)))  # a bad checkpoint fails before any image is read
    save_dir = _save_input_dir(args.save_input)
    results, failed = [], 0
    for path, name in zip(args.images, input_names(args.images)):
        try:
            pred = predictor.predict_file(path, save_dir, name)
        except ImageError as e:  # one line for this file; the others are still predicted
            failed += 1
            message = f"{path}: {e}"
            results.append({"image": path, "error": message})
            if not args.json:
                print(f"cnnlab predict: error: {message}", file=sys.stderr)
            continue
        results.append({"image": path, **pred.as_dict(args.top)})
        if not args.json:
            top = "  ".join(f"{g.name}: {100 * g.probability:5.1f}%" for g in pred.top(args.top))
            print(f"{path}: {pred.name}    ({top})")
    if args.json:
        print(json.dumps({"model": {**predictor.info, "checkpoint": str(args.checkpoint)}, "predictions": results}, indent=2))
    return 1 if failed else 0


def _save_input_dir(arg: str | None) -> Path | None:
    """The --save-input directory, made now: a path that cannot be one is refused before any image is predicted."""
    if arg is None:
        return None
    out = Path(arg)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--save-input {arg} is a file; give a directory (it is made if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--save-input {arg}: cannot make the directory ({e.strerror or e})") from None
    return out
