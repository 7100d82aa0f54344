"""Data for tests of mechanics (files written, determinism, servers that must not fail), never of accuracy: a
synthetic MNIST-shaped set in memory, and small image folders drawn on disk.

tests/train/ddp_worker.py, a script that torchrun runs outside pytest, imports this module by path: keep it free of
pytest and of the other support modules.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from cnnlab.data import ImageSet
from cnnlab.data.sets.mnist import SPEC as MNIST

SHAPES = ("circle", "square", "triangle")  # the classes of draw_folder, in sorted order


def synthetic_mnist(train: int = 600, test: int = 200, seed: int = 1234) -> ImageSet:
    """`train` training and `test` test images of random noise (28x28 uint8) with random labels 0..9.

    Right shapes and dtypes, for tests of mechanics, never of accuracy. The same (train, test, seed) gives the same
    tensors on every machine and in every process: the distributed tests rely on that. The draws come in a fixed order
    (train images, train labels, test images, test labels) from one generator seeded with `seed`.
    """
    g = torch.Generator().manual_seed(seed)
    return ImageSet(
        train_images=torch.randint(0, 256, (train, 28, 28), dtype=torch.uint8, generator=g),
        train_labels=torch.randint(0, 10, (train,), generator=g),
        test_images=torch.randint(0, 256, (test, 28, 28), dtype=torch.uint8, generator=g),
        test_labels=torch.randint(0, 10, (test,), generator=g),
        source="synthetic (tests)",
        name="mnist",
        title="MNIST",
        classes=MNIST.classes,
        mean=MNIST.mean,
        std=MNIST.std,
    )


def draw_folder(root: Path, per_class: int = 40, seed: int = 0, side: int | None = None, outline: bool = False) -> Path:
    """per_class images of each shape: random position and colours, random size 20-60 px and Pillow mode, or
    with `side` all that size and RGB; `outline` draws the shapes' outlines instead of filling them."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True)
        for i in range(per_class):
            w = side or rng.randint(20, 60)
            bg, fg = rng.randint(180, 255), rng.randint(0, 80)
            img = Image.new("RGB", (w, w if side else w + rng.randint(-4, 4)), (bg, bg, rng.randint(150, 255)))
            d = ImageDraw.Draw(img)
            r = rng.uniform(0.25, 0.4) * w if not side else rng.uniform(0.12, 0.4) * w
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, w - r)
            box = (cx - r, cy - r, cx + r, cy + r)
            colour = (fg, rng.randint(0, 80), fg) if not side else (rng.randint(0, 120), rng.randint(0, 120), rng.randint(0, 120))
            paint = dict(outline=colour, width=max(2, w // 40)) if outline else dict(fill=colour)
            if shape == "circle":
                d.ellipse(box, **paint)
            elif shape == "square":
                d.rectangle(box, **paint)
            else:
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], **paint)
            mode = "RGB" if side else rng.choice(["RGB", "L", "RGBA", "P"])
            img.convert(mode).save(root / shape / f"{i}.{rng.choice(['png', 'bmp', 'webp'])}")
    (root / "square" / "notes.txt").write_text("not an image: ignored")
    return root


def draw_noise_folder(root: Path, classes: tuple[str, ...] = ("a", "b", "c"), per_class: int = 12, side: int = 16) -> Path:
    """An image folder of grey side x side noise PNGs, per_class in each class: the smallest data set `cnnlab train`
    runs on (for the mechanics of output and stopping, never for accuracy)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root
