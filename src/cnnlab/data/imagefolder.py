"""Your own images: a folder with one sub-folder per class, loaded into memory like MNIST.

    photos/
      cat/  a.jpg b.png ...
      dog/  c.jpg ...

`--dataset imagefolder:photos` reads every image file (by extension; other files are ignored), of any size
and mode, and makes it square at one size (`--image-size`, or the median of the images' shorter sides,
kept within 16..64 pixels so that the lecture's networks fit and the set stays small in memory). Images are
grey (1 channel) when every one of them is, else RGB. The split is stratified and repeatable: in each class,
a shuffle seeded by `--split-seed` (not `--seed`: runs with different seeds are then tested on the same images)
puts 20% in the test set; the rest is training data (in shuffled order, so the validation hold-out taken from its
end mixes the classes).

The entry takes a path (`imagefolder:PATH`, recorded absolute), and its recipe leaves the batch size, learning rate,
epochs, hold-out and shift open: a folder may hold 200 images or 200,000, so they are chosen from its size when
the run starts (config.fit_to_data). A user's picture is stretched to the folder's size (`to_square`), as the
training images were.
"""

from __future__ import annotations

import io
import os
import random
import statistics
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.errors import DataError
from cnnlab.data.imageset import ImageSet
from cnnlab.data.pictures import square_pixels, to_square
from cnnlab.data.registry import DatasetEntry, register_dataset
from cnnlab.readfile import FileRefused, read_bounded

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
TEST_FRACTION = 0.2
MIN_SIDE, MAX_SIDE = 16, 64
MAX_FILE_BYTES = 64 * 2**20  # one picture of the folder; more is refused and listed, never read whole


def load_imagefolder(path: str | Path, image_size: int = 0, split_seed: int = 0, missing_hint: str = "") -> ImageSet:
    """Load `path` (see the module's docstring) as an ImageSet; image_size 0 infers it, `split_seed` chooses the
    train/test split. The set's name
    holds the folder's absolute path, so a run that records it can be evaluated or resumed from anywhere.
    `missing_hint` is added to the error when `path` is not a directory.

    Raises:
        DataError: not a directory, no class folders, empty classes, or files that cannot be read (listed).
    """
    from PIL import Image, ImageOps

    root = Path(os.path.abspath(Path(path).expanduser()))  # abspath: "../x" recorded as where it leads
    if not root.is_dir():
        raise DataError(f"imagefolder {root}: not a directory" + (f" ({missing_hint})" if missing_hint else ""))
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"imagefolder {root}: needs at least 2 class folders (one per class), found {len(class_dirs)}")
    files = {d.name: sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS) for d in class_dirs}
    empty = [name for name, fs in files.items() if not fs]
    if empty:
        raise DataError(f"imagefolder {root}: no image files in {', '.join(empty)} (extensions: {', '.join(sorted(EXTENSIONS))})")

    images, bad = {}, []
    for name, fs in files.items():
        for f in fs:
            try:
                with Image.open(io.BytesIO(read_bounded(f, MAX_FILE_BYTES))) as im:
                    im = ImageOps.exif_transpose(im)
                    im.load()
                    images[f] = im.copy()
            except FileRefused as e:  # a pipe, a device, or over the limit
                bad.append(f"{f.relative_to(root)} ({e})")
            except Exception as e:  # Pillow raises many kinds for a bad file; the user needs the list
                bad.append(f"{f.relative_to(root)} ({type(e).__name__})")
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(f"imagefolder {root}: {len(bad)} file(s) cannot be read as images: {shown}")

    if image_size <= 0:
        image_size = int(min(MAX_SIDE, max(MIN_SIDE, statistics.median(min(im.size) for im in images.values()))))
    grey = all(im.mode in GREY_MODES for im in images.values())

    rng = random.Random(split_seed)
    train, test = [], []
    for label, (name, fs) in enumerate(files.items()):
        order = list(fs)
        rng.shuffle(order)
        n_test = max(1, round(TEST_FRACTION * len(order))) if len(order) > 1 else 0
        test += [(f, label) for f in order[:n_test]]
        train += [(f, label) for f in order[n_test:]]
    rng.shuffle(train)

    def stack(items):
        x = torch.from_numpy(np.stack([square_pixels(images[f], image_size, grey) for f, _ in items])) if items else torch.empty(0, dtype=torch.uint8)
        return x, torch.tensor([label for _, label in items], dtype=torch.int64)

    train_x, train_y = stack(train)
    test_x, test_y = stack(test)
    x01 = train_x.float().div(255)
    return ImageSet(
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        # No train/test counts here: the validation hold-out is taken from the training images later, and
        # the counts users see are the ones after it (cnnlab train's header).
        source=f"image folder {root} ({len(images)} images in {len(files)} classes, "
        f"{image_size}x{image_size} {'grey' if grey else 'RGB'})",
        name=f"imagefolder:{root}",
        classes=tuple(files),
        mean=float(x01.mean()),
        std=float(x01.std().clamp(min=1e-3)),
    )


def _load(path: str, data_dir: str | None = None, image_size: int = 0, split_seed: int = 0, recorded: bool = True,
          **_) -> ImageSet:
    """The entry's loader: a run names the folder; `data_dir` is its new place when it has moved since."""
    if data_dir:
        return load_imagefolder(data_dir, image_size, split_seed)
    moved = "the run was trained on it; if it moved, pass --data-dir NEW_PATH" if recorded else ""
    return load_imagefolder(path, image_size, split_seed, missing_hint=moved)


ENTRY = register_dataset(DatasetEntry(
    name="imagefolder", title="image folder", takes_path=True,
    summary="your own pictures, one sub-folder per class, any size and mode (imagefolder:PATH)",
    load=_load,
    prepare=lambda picture, in_channels, image_size: to_square(picture, image_size, in_channels),
    pixels="as the image folder's pictures, stretched to its size",
    # None: chosen from the folder's size when the run starts (config.fit_to_data); a value the user gives is kept
    recipe=dict(epochs=None, batch_size=None, lr=None, val_size=None, max_shift=None),
))
