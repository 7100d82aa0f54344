"""Turn any picture of a digit into what an MNIST model expects: 28x28, white ink on black, centred the MNIST way.

MNIST's digits were size-normalised to fit a 20x20 box with their aspect ratio kept, then placed in a 28x28
image so that their centre of mass sits at the centre. A photo or a canvas resized straight to 28x28 keeps its
margins, its stroke width and its dark-on-light polarity, and a model trained on MNIST misreads it. The steps:

1. decode (any format Pillow reads), apply the EXIF orientation, flatten transparency, convert to grey;
2. find the polarity from the background (the median of the border pixels) and make the ink bright;
3. subtract the background and stretch the ink to 0..255;
4. crop to the ink's bounding box, scale its longer side to 20 px (aspect ratio kept), anti-aliased;
5. place it in 28x28 so that its centre of mass is at the centre.

Models trained on other data read other pictures: `to_fashion` makes one garment into Fashion-MNIST's format,
`to_square` makes any picture into an image-folder model's format. Each data set's entry (data/registry.py)
names the one that suits models trained on it.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 4 * 2**20  # larger uploads are refused before decoding
MAX_SIDE = 4096  # larger images are refused before decoding (decompression bombs)
BOX = 20  # MNIST's size-normalisation box
SIZE = 28  # MNIST's image size
INK_FRACTION = 0.15  # a pixel is ink when brighter than this fraction of the brightest one, above the background
MIN_CONTRAST = 24  # grey levels between background and ink below which an image counts as blank


class ImageError(ValueError):
    """An input that cannot be made into a digit image; the message says why, for the user."""


class ImageTooLarge(ImageError):
    """An input over the size limits (bytes or pixels a side), refused before it is decoded."""


def load_image(source: str | Path | bytes) -> Image.Image:
    """Decode an image file (path) or its bytes, checking size limits before decoding the pixels.

    Error messages say what is wrong, not with what: the caller names the file or the upload.
    """
    if isinstance(source, (str, Path)):
        data = _read_file(Path(source))
    else:
        data = bytes(source)
    if not data:
        raise ImageError("the file is empty")
    if len(data) > MAX_BYTES:
        raise ImageTooLarge(f"{len(data):,} bytes is over the {MAX_BYTES // 2**20} MB limit")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageError(f"the image has no pixels ({w}x{h})")
        if w > MAX_SIDE or h > MAX_SIDE:
            raise ImageTooLarge(f"the image is {w}x{h}; at most {MAX_SIDE} px a side")
        img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"the image could not be decoded ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return img


def _read_file(path: Path) -> bytes:
    """The bytes of a regular file, or an ImageError saying why not. Anything else is refused before it is
    opened: a directory cannot be read, and a FIFO or a device would block or never end."""
    try:
        st = path.stat()
    except OSError as e:
        raise ImageError(f"cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"is {_kind_of_file(st.st_mode)}, not an image file")
    if st.st_size > MAX_BYTES:
        raise ImageTooLarge(f"{st.st_size:,} bytes is over the {MAX_BYTES // 2**20} MB limit")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read ({e.strerror or e})") from None


def _kind_of_file(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def to_grey(img: Image.Image) -> np.ndarray:
    """Grey levels as float32 in 0..255. Transparency is flattened onto the colour that contrasts with the
    ink, so dark strokes on a transparent canvas and light strokes on one both survive."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("P", "PA", "LA") or "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        rgba = np.asarray(img, dtype=np.float32)
        alpha = rgba[..., 3] / 255.0
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if alpha.min() < 1.0:
            weight = alpha.sum()
            ink_level = float((grey * alpha).sum() / weight) if weight > 0 else 0.0
            background = 255.0 if ink_level < 128 else 0.0
            grey = grey * alpha + background * (1 - alpha)
        return grey
    if img.mode not in ("L", "F", "I", "I;16"):
        img = img.convert("RGB").convert("L")
    arr = np.asarray(img, dtype=np.float32)
    if img.mode in ("I", "I;16", "F") and arr.max() > 255:  # 16-bit or float images: rescale to 0..255
        arr = arr * (255.0 / arr.max())
    return arr


def to_mnist(source: str | Path | bytes | Image.Image | np.ndarray) -> np.ndarray:
    """A digit image in MNIST's format: (28, 28) uint8, white on black, centred by centre of mass.

    Raises ImageError for inputs that cannot be read or hold no ink.
    """
    grey, background = _light_on_dark(_grey_of(source))
    ink = np.clip(grey - background, 0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise ImageError("the image holds no ink: nothing differs from its background")
    ink *= 255.0 / peak

    ys, xs = np.nonzero(ink > INK_FRACTION * 255.0)
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(crop.astype(np.float32)).resize((new_w, new_h), resample), dtype=np.float32)
    small = np.clip(small, 0, 255)

    # Centre of mass to the centre, as MNIST did it: at pixel index 14 of 0..27 (measured on the test set,
    # MNIST's own digits have it there, not at 13.5). The shift is sub-pixel (bilinear): an integer shift
    # puts a thin digit up to a pixel away from where MNIST's would sit.
    total = small.sum()
    cy = float((small.sum(1) * np.arange(new_h)).sum() / total)
    cx = float((small.sum(0) * np.arange(new_w)).sum() / total)
    oy = min(max(SIZE // 2 - cy, 0.0), SIZE - new_h)  # keep the whole box inside the frame
    ox = min(max(SIZE // 2 - cx, 0.0), SIZE - new_w)
    placed = Image.fromarray(small).transform(
        (SIZE, SIZE), Image.Transform.AFFINE, (1, 0, -ox, 0, 1, -oy), resample=Image.Resampling.BILINEAR
    )
    out = np.clip(np.asarray(placed, dtype=np.float32), 0, 255)
    return np.round(out).astype(np.uint8)


def _grey_of(source: str | Path | bytes | Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(source, np.ndarray):
        grey = source.astype(np.float32)
        if grey.ndim != 2 or grey.size == 0:
            raise ImageError(f"expected a 2-D grey image, got an array of shape {grey.shape}")
        return grey
    return to_grey(source if isinstance(source, Image.Image) else load_image(source))


def _light_on_dark(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """(image, background level) with the subject brighter than the background: the border is mostly
    background, and a light background means a dark subject, so the image is inverted."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 127.5:
        return 255.0 - grey, 255.0 - background
    return grey, background


def to_fashion(source: str | Path | bytes | Image.Image | np.ndarray) -> np.ndarray:
    """A picture of one garment in Fashion-MNIST's format: (28, 28) uint8, the item light on black,
    trimmed to it and scaled so that its longer side is 28 px, centred.

    Fashion-MNIST was made from product photos on white: trimmed of the background, the longer edge resized
    to 28, the shorter padded to 28 around the centre, the intensities negated. Here the background is the
    border's median level (light or dark), and a pixel belongs to the item when it differs from it by more
    than 5% of the grey range.

    Raises ImageError for inputs that cannot be read or where nothing differs from the background.
    """
    grey, background = _light_on_dark(_grey_of(source))
    item = np.clip(grey - background, 0, 255)
    ys, xs = np.nonzero(item > 0.05 * 255)
    if len(ys) == 0 or float(item.max()) < MIN_CONTRAST:
        raise ImageError("the image holds no item: nothing differs from its background")
    crop = item[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = SIZE / max(h, w)
    new_w, new_h = max(1, min(SIZE, round(w * scale))), max(1, min(SIZE, round(h * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    small = np.clip(np.asarray(Image.fromarray(crop.astype(np.float32)).resize((new_w, new_h), resample)), 0, 255)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    top, left = (SIZE - new_h) // 2, (SIZE - new_w) // 2
    out[top : top + new_h, left : left + new_w] = small
    return np.round(out).astype(np.uint8)


def to_square(source: str | Path | bytes | Image.Image, size: int, channels: int) -> np.ndarray:
    """Any picture as an image-folder model's training images were made: stretched to (size, size),
    grey (channels 1) or (3, size, size) RGB, uint8."""
    from cnnlab.data.imagefolder import square_pixels

    if isinstance(source, np.ndarray):
        raise ImageError("give an image file or a Pillow image, not an array")
    img = source if isinstance(source, Image.Image) else load_image(source)
    return square_pixels(ImageOps.exif_transpose(img), size, grey=channels == 1)
