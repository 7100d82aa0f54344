"""Run directories made for a test: a model trained on a folder of drawn shapes, a finished run made to look
stopped, and the weights a run or a worker saved."""

from __future__ import annotations

from pathlib import Path

import torch

from .data import SHAPES, draw_folder

SIZE = 16  # pixels a side of the shapes model: the smallest basic_cnn takes, and not MNIST's 28 (a fixed 28 shows)


def train_on_shapes(root: Path, tta_hflip: bool = False) -> Path:
    """Draw the shapes under `root`/shapes (3 classes, RGB, SIZE x SIZE), train basic_cnn on them for two steps, and
    return the run directory: for the mechanics of image-folder models (shapes, names, files), never for accuracy."""
    from cnnlab.data import load_data
    from cnnlab.train import fit, make_config

    name = f"imagefolder:{draw_folder(root / 'shapes', per_class=8)}"
    cfg = make_config("basic_cnn", dataset=name, steps=2, batch_size=8, image_size=SIZE, device="cpu", tta_hflip=tta_hflip)
    return fit(cfg, load_data(name, image_size=SIZE), out_root=root / "runs", progress=False).run_dir


def as_stopped(run: Path, steps_left: int = 2) -> Path:
    """A finished `run` made to look like one stopped before its end, for tests of --resume that need something to
    train: last.pt's plan lengthened by `steps_left` steps (re-saved as cnnlab writes it) and no summary.json."""
    from cnnlab.runs import Checkpoint

    record = Checkpoint.read(run / "last.pt", resume=True)
    record.total_steps = record.steps + steps_left
    record.save(run / "last.pt")
    (run / "summary.json").unlink(missing_ok=True)
    return run


def saved_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict that torch.save wrote (a worker's rank<R>.pt), loaded as plain tensors."""
    return torch.load(path, weights_only=True)


__all__ = ["SHAPES", "SIZE", "as_stopped", "saved_weights", "train_on_shapes"]
