"""A model trained for two steps on a small folder of drawn shapes: 3 classes, RGB, 16x16. For the mechanics of
image-folder models (shapes, names, files), never for accuracy."""

from __future__ import annotations

from pathlib import Path

from ..data.test_imagefolder import SHAPES, draw_folder

SIZE = 16  # pixels a side: the smallest basic_cnn takes, and not MNIST's 28, so a fixed 28 anywhere shows


def train_on_shapes(root: Path, tta_hflip: bool = False) -> Path:
    """Draw the shapes under `root`/shapes, train basic_cnn on them, return the run directory."""
    from cnnlab.data import load_data
    from cnnlab.train import fit, make_config

    name = f"imagefolder:{draw_folder(root / 'shapes', per_class=8)}"
    cfg = make_config("basic_cnn", dataset=name, steps=2, batch_size=8, image_size=SIZE, device="cpu", tta_hflip=tta_hflip)
    return fit(cfg, load_data(name, image_size=SIZE), out_root=root / "runs", progress=False).run_dir


__all__ = ["SHAPES", "SIZE", "train_on_shapes"]
