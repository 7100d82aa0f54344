"""cnnlab evaluate: a trained model's test accuracy, per class, its most confused pairs and confusion.png."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cnnlab.cli.args import add_checkpoint, add_data_dir, add_device, use_device

HELP = "test accuracy, per-class accuracy, confused pairs, confusion.png"
EPILOG = "example:\n  cnnlab evaluate runs/20260101-120000-resnet/best.pt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p)
    add_data_dir(p)
    add_device(p)
    p.add_argument("--out", help="where to write confusion.png (default: beside the checkpoint)")
    p.add_argument(
        "--tta-hflip", action=argparse.BooleanOptionalAction,
        help="average each test image's logits with its mirror image's, or not (default: as the model was trained)",
    )


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from cnnlab.analysis.evaluation import evaluate_model, plot_confusion
    from cnnlab.runs import checkpoint_dir, load

    ckpt = Path(args.checkpoint)
    trained = load(ckpt, use_device(args))  # a bad checkpoint fails here, before any data is loaded
    if args.tta_hflip is not None:
        trained.config = dataclasses.replace(trained.config, tta_hflip=args.tta_hflip)
    # The test set of the data the model was trained on (an image folder's split and size come from the run).
    data = trained.load_data(args.data_dir, progress=True)  # a changed folder: refused
    with tqdm(total=len(data.test_labels), desc="evaluating", unit="img", unit_scale=True, leave=False,
              dynamic_ncols=True, disable=None) as bar:  # None: a bar on a terminal only, never in a log or a pipe
        ev = evaluate_model(trained, data, step=bar.update)
    mirrored = ", each averaged with its mirror image" if trained.config.tta_hflip else ""
    print(f"{ev.model}: test accuracy {100 * ev.accuracy:.2f}% on {len(data.test_labels):,} {data.title} test images{mirrored}\n")
    _print_classes(ev, data.classes)
    out = Path(args.out) if args.out else checkpoint_dir(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(ev, out / "confusion.png")
    print(f"\nconfusion matrix: {out / 'confusion.png'}")
    return 0


def _print_classes(ev, classes: list[str]) -> None:
    """Each class's accuracy, then the most confused pairs; a class is its label, and its name unless that is the
    label (digits)."""
    from cnnlab.tables import format_table

    name = (lambda k: str(k)) if classes[0] == "0" else (lambda k: f"{k} {classes[k]}")
    print(format_table(["class", "accuracy"], [[name(k), f"{100 * a:.2f}%"] for k, a in enumerate(ev.per_class)]))
    if ev.confused_pairs:
        print("\nmost confused (true -> predicted: count)")
        for t, p, n in ev.confused_pairs:
            print(f"  {name(t)} -> {name(p)}: {n}")
