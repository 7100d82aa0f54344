"""Your own images: a folder with one sub-folder per class, loaded into memory like MNIST.

    photos/
      cat/  a.jpg b.png ...
      dog/  c.jpg ...

`--dataset imagefolder:photos` reads every image file (by extension; other files are ignored), of any mode and of
any size a single picture may have (pictures.MAX_DECODED_BYTES once decoded; a larger JPEG is decoded smaller to
fit), and makes it square at one size (`--image-size`, or the median of the images' shorter sides, kept within
16..64 pixels so that the lecture's networks fit and the set stays small in memory; the whole set within
MAX_FOLDER_BYTES). Images are
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
import math
import os
import random
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.errors import DataError
from cnnlab.data.tensors.imageset import ImageSet
from cnnlab.data.tensors.pictures import (MAX_DECODED_BYTES, ImageTooLarge, decoded_bytes, fit_decoded_budget, square_pixels,
                                  to_square)
from cnnlab.data.sets.registry import DatasetEntry, register_dataset
from cnnlab.readfile import FileRefused, FileTooLarge, open_regular, read_bounded

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
TEST_FRACTION = 0.2
MIN_SIDE, MAX_SIDE = 16, 64
MAX_FILE_BYTES = 64 * 2**20  # one picture of the folder; more is refused and listed, never read whole
# The folder as it is held in memory, made square: images x channels x side x side bytes, counted from the files'
# headers before any picture is decoded. MNIST's 70,000 images take 55 MB; 2 GB holds 175,000 colour images at
# 64 px (the largest inferred size) or 2,700 at 512 px (the largest --image-size). One picture at a time is
# decoded, within the budget of a single picture (pictures.MAX_DECODED_BYTES).
MAX_FOLDER_BYTES = 2 * 2**30


@dataclass
class _Header:
    """What a picture's header says, read without decoding its pixels."""

    size: tuple[int, int]  # width, height (a JPEG over the budget: the smaller size it will be decoded at)
    grey: bool


def load_imagefolder(path: str | Path, image_size: int = 0, split_seed: int = 0, missing_hint: str = "",
                     max_bytes: int = MAX_FOLDER_BYTES) -> ImageSet:
    """Load `path` (see the module's docstring) as an ImageSet; image_size 0 infers it, `split_seed` chooses the
    train/test split. The set's name holds the folder's absolute path, so a run that records it can be evaluated
    or resumed from anywhere. `missing_hint` is added to the error when `path` is not a directory.

    Memory stays within the budgets: every picture's header is read first (its size, its mode), and a picture over
    the decoded-size budget of one picture is refused there (a JPEG is decoded smaller to fit instead: see
    pictures.fit_decoded_budget), as is a folder whose square images would take over `max_bytes`; then the pictures
    are decoded one at a time, each made square straight into the set's tensor.

    Raises:
        DataError: not a directory, no class folders, empty classes, files that cannot be read or are over the
            budget of one picture (listed), or the folder over `max_bytes`.
    """
    root = Path(os.path.abspath(Path(path).expanduser()))  # abspath: "../x" recorded as where it leads
    files = _class_files(root, missing_hint)
    headers = _headers(root, files)
    image_size = image_size if image_size > 0 else \
        int(min(MAX_SIDE, max(MIN_SIDE, statistics.median(min(h.size) for h in headers.values()))))
    grey = all(h.grey for h in headers.values())
    _check_budget(root, len(headers), 1 if grey else 3, image_size, max_bytes)
    train, test = _split(files, split_seed)
    bad: list[tuple[Path, Exception]] = []
    train_x, train_y = _stack(train, image_size, grey, bad)
    test_x, test_y = _stack(test, image_size, grey, bad)
    _refuse(root, bad)
    mean, std = _mean_std(train_x)
    return ImageSet(
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        # No train/test counts here: the validation hold-out is taken from the training images later, and
        # the counts users see are the ones after it (cnnlab train's header).
        source=f"image folder {root} ({len(headers)} images in {len(files)} classes, "
        f"{image_size}x{image_size} {'grey' if grey else 'RGB'})",
        name=f"imagefolder:{root}",
        title=f"imagefolder:{root}",  # a folder is known by its path
        classes=tuple(files),
        mean=mean,
        std=std,
    )


def _class_files(root: Path, missing_hint: str) -> dict[str, list[Path]]:
    """Each class folder's image files, by class name in sorted order (a DataError for a folder that has none)."""
    if not root.is_dir():
        raise DataError(f"imagefolder {root}: not a directory" + (f" ({missing_hint})" if missing_hint else ""))
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"imagefolder {root}: needs at least 2 class folders (one per class), found {len(class_dirs)}")
    files = {d.name: sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS) for d in class_dirs}
    empty = [name for name, fs in files.items() if not fs]
    if empty:
        raise DataError(f"imagefolder {root}: no image files in {', '.join(empty)} (extensions: {', '.join(sorted(EXTENSIONS))})")
    return files


def _headers(root: Path, files: dict[str, list[Path]]) -> dict[Path, _Header]:
    """Every picture's header (its size and mode), read before anything is decoded; the unreadable ones listed."""
    headers: dict[Path, _Header] = {}
    bad: list[tuple[Path, Exception]] = []
    for fs in files.values():
        for f in fs:
            try:
                headers[f] = _read_header(f)
            except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file; each is listed
                bad.append((f, e))
    _refuse(root, bad)
    return headers


def _check_budget(root: Path, n: int, channels: int, image_size: int, max_bytes: int) -> None:
    need = n * channels * image_size * image_size
    if need > max_bytes:
        fits = math.isqrt(max_bytes // (n * channels))
        smaller = f"a smaller --image-size (at most {fits}) or fewer images" if fits >= 1 else "fewer images"
        raise DataError(f"imagefolder {root}: {n:,} images at {image_size}x{image_size} "
                        f"{'grey' if channels == 1 else 'RGB'} would take {_bytes(need)} in memory, over the "
                        f"{_bytes(max_bytes)} budget for an image folder; {smaller} would fit")


def _split(files: dict[str, list[Path]], split_seed: int) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(picture, label) for training and for testing: TEST_FRACTION of each class held out, drawn by `split_seed`."""
    rng = random.Random(split_seed)
    train, test = [], []
    for label, (name, fs) in enumerate(files.items()):
        order = list(fs)
        rng.shuffle(order)
        n_test = max(1, round(TEST_FRACTION * len(order))) if len(order) > 1 else 0
        test += [(f, label) for f in order[:n_test]]
        train += [(f, label) for f in order[n_test:]]
    rng.shuffle(train)
    return train, test


def _stack(items: list[tuple[Path, int]], image_size: int, grey: bool,
           bad: list[tuple[Path, Exception]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pictures decoded one at a time, each made square straight into the tensor (the set is never held
    twice); a picture whose pixels fail after its header read well is added to `bad`."""
    shape = (len(items), image_size, image_size) if grey else (len(items), 3, image_size, image_size)
    x = torch.empty(shape, dtype=torch.uint8)
    for i, (f, _) in enumerate(items):
        try:
            x[i] = torch.from_numpy(_square(f, image_size, grey))
        except Exception as e:  # noqa: BLE001 - a file whose pixels fail after its header read well
            bad.append((f, e))
    return x, torch.tensor([label for _, label in items], dtype=torch.int64)


def _read_header(f: Path) -> _Header:
    """The size and mode `f`'s header gives, once its decoded size is within the budget of one picture; Pillow
    reads only the header here."""
    from PIL import Image

    with open_regular(f) as file, warnings.catch_warnings():
        # Pillow warns of a decompression bomb beyond 89 million pixels; such a picture is refused here anyway
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        size = os.fstat(file.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise FileTooLarge(size, MAX_FILE_BYTES)
        with Image.open(file) as im:
            try:
                fit_decoded_budget(im)
            except ImageTooLarge:  # listed with the others, the budget said once for all of them
                raise _OverBudget(f"{im.size[0]}x{im.size[1]} {im.mode}, {decoded_bytes(im) / 2**20:.0f} MB") from None
            return _Header(im.size, im.mode in GREY_MODES)


class _OverBudget(ImageTooLarge):
    """A folder's picture over the budget of one picture: its size, mode and decoded bytes."""


def _square(f: Path, image_size: int, grey: bool) -> np.ndarray:
    """`f` decoded (within the budget of one picture), turned upright and made square as the folder stores it."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(read_bounded(f, MAX_FILE_BYTES))) as im:
        fit_decoded_budget(im)  # as its header was checked: the file may have changed since
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # ours alone: turned without a full-size copy
        return square_pixels(im, image_size, grey)


def _refuse(root: Path, bad: list[tuple[Path, Exception]]) -> None:
    """One DataError listing the files that cannot be read and those over the budget of one picture, each with
    why (the first ten of each)."""
    from PIL import Image

    def listed(items: list[str]) -> str:
        return "; ".join(items[:10]) + (f"; and {len(items) - 10} more" if len(items) > 10 else "")

    large = [f"{f.relative_to(root)} ({e})" for f, e in bad if isinstance(e, (_OverBudget, Image.DecompressionBombError))]
    # A pipe, a device, a file over MAX_FILE_BYTES: the reason says which. Otherwise Pillow's error's name
    # (it raises many kinds for a bad file) tells them apart.
    unreadable = [f"{f.relative_to(root)} ({e if isinstance(e, FileRefused) else type(e).__name__})" for f, e in bad
                  if not isinstance(e, (_OverBudget, Image.DecompressionBombError))]
    parts = []
    if unreadable:
        parts.append(f"{len(unreadable)} file(s) cannot be read as images: {listed(unreadable)}")
    if large:
        parts.append(f"{len(large)} picture(s) over the {MAX_DECODED_BYTES // 2**20} MB one picture may take once "
                     f"decoded (shrink them, or save them as JPEG, which is decoded smaller to fit): {listed(large)}")
    if parts:
        raise DataError(f"imagefolder {root}: " + "; ".join(parts))


def _bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def _mean_std(x: torch.Tensor, chunk: int = 4096) -> tuple[float, float]:
    """The mean and standard deviation of `x`'s pixels in 0..1, summed a chunk of images at a time: a float copy
    of the whole set would take four times its memory."""
    n = x.numel()
    if n == 0:
        return float("nan"), 1e-3
    total = squares = 0.0
    for part in x.split(chunk):
        v = part.double().div_(255)
        total += float(v.sum())
        squares += float(v.square_().sum())
    mean = total / n
    var = max(0.0, squares - n * mean * mean) / max(1, n - 1)
    return mean, max(math.sqrt(var), 1e-3)


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
