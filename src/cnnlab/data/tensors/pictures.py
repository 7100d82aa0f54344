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
`to_square` makes any picture into an image-folder model's format. Each data set's entry (data/sets/registry.py)
names the one that suits models trained on it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import CnnlabError
from cnnlab.readfile import FileRefused, FileTooLarge, NotAFile, read_bounded

MAX_BYTES = 4 * 2**20  # larger uploads are refused before decoding
MAX_SIDE = 4096  # larger images are refused before decoding (decompression bombs)
# The memory a picture may take once decoded, counted before decoding: width x height x the bytes a pixel takes
# in memory (decoded_bytes). A 137 KB PNG can hold 4096x4096 16-bit RGBA, 64 MB once decoded; without this, a
# server's memory would follow the pixels sent, not the bytes. 16 MB keeps a screenshot (2560x1440 RGB) and a
# 4096x4096 grey scan; a phone's JPEG photo is decoded at a half or a quarter of its size to fit (see fit_decoded_budget).
MAX_DECODED_BYTES = 16 * 2**20
WORK_SIDE = 1024  # a larger picture is box-averaged down to this many px a side before the float steps of to_grey
BOX = 20  # MNIST's size-normalisation box
SIZE = 28  # MNIST's image size
INK_FRACTION = 0.15  # a pixel is ink when brighter than this fraction of the brightest one, above the background
MIN_CONTRAST = 24  # grey levels between background and ink below which an image counts as blank


class ImageError(CnnlabError, ValueError):
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
        fit_decoded_budget(img)
        img.load()
        _check_finite(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"the image could not be decoded ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return img


def _read_file(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_BYTES, or an ImageError saying why not: a directory cannot
    be read, and a named pipe or a device (/dev/zero, or a .png linked to it) would block or never end."""
    try:
        return read_bounded(path, MAX_BYTES)
    except FileTooLarge as e:
        over = f"{e.size:,} bytes is" if e.known else "the file is"
        raise ImageTooLarge(f"{over} over the {MAX_BYTES // 2**20} MB limit") from None
    except NotAFile as e:
        raise ImageError(f"{e}, not an image file") from None
    except FileRefused as e:
        raise ImageError(str(e)) from None


def decoded_bytes(img: Image.Image) -> int:
    """The memory `img` takes decoded, known from its header alone: Pillow holds 1-bit and 8-bit grey in a byte
    a pixel and every other mode in four (RGB too); a palette, 16-bit or transparent grey picture counts four
    because preparing it converts it to a four-byte mode (RGBA, 32-bit grey) at full size."""
    w, h = img.size
    return w * h * (1 if img.mode in ("1", "L") and "transparency" not in img.info else 4)


def check_decoded_size(img: Image.Image) -> None:
    """Raise ImageTooLarge, before any pixel is decoded, if `img` would take more than MAX_DECODED_BYTES."""
    need = decoded_bytes(img)
    if need > MAX_DECODED_BYTES:
        w, h = img.size
        raise ImageTooLarge(f"the image is {w}x{h} {img.mode}, {need / 2**20:.0f} MB once decoded; the limit is "
                            f"{MAX_DECODED_BYTES // 2**20} MB (about {MAX_DECODED_BYTES // 4 // 10**6} million "
                            f"colour pixels)")


def fit_decoded_budget(img: Image.Image) -> Image.Image:
    """`img`, opened and not yet decoded, made to fit MAX_DECODED_BYTES: a JPEG over it is decoded at 1/2, 1/4 or
    1/8 of its size (its DCT allows that at no cost), the largest that fits, since a digit photographed by a phone
    needs nowhere near its 12 million pixels; any other picture over it is refused. An image folder's pictures are
    held to the same budget, so that every picture a model was trained on could also be given to it.

    Raises:
        ImageTooLarge: over the budget even at 1/8 (a JPEG), or at all (any other format); from the header alone.
    """
    if img.format == "JPEG" and decoded_bytes(img) > MAX_DECODED_BYTES:
        w, h = img.size
        for d in (2, 4, 8):
            if decoded_bytes(img) // (d * d) <= MAX_DECODED_BYTES:
                img.draft(img.mode, (-(-w // d), -(-h // d)))
                break
    check_decoded_size(img)
    return img


def _check_finite(img: Image.Image, rows: int = 256) -> None:
    # Only 32-bit float pictures (TIFF) can hold NaN or infinity; every step after this assumes numbers. Read in
    # strips of rows, so the check costs a strip's copy, not the picture's.
    if img.mode != "F":
        return
    w, h = img.size
    for top in range(0, h, rows):
        if not np.isfinite(np.asarray(img.crop((0, top, w, min(h, top + rows))))).all():
            raise ImageError("the image has pixels that are not numbers (NaN or infinite)")


# EXIF orientation -> the transpose that makes the picture upright (what ImageOps.exif_transpose applies)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _upright_and_small(img: Image.Image) -> Image.Image:
    """`img` upright (its EXIF orientation applied) and at most WORK_SIDE px a side, box-averaged by a whole
    factor: the float steps after this cost memory per pixel, and a digit ends up 20 px tall anyway.
    Shrunk before it is turned, so the full-size picture is never copied."""
    try:
        turn = _UPRIGHT.get(img.getexif().get(0x0112))  # 0x0112: Orientation
    except Exception:  # a damaged EXIF block: use the picture as stored, as exif_transpose would fail to
        turn = None
    factor = -(-max(img.size) // WORK_SIDE)
    if factor > 1:
        if img.mode in ("P", "PA", "LA") or "transparency" in img.info:
            img = img.convert("RGBA")  # as to_grey would, so the transparency survives the averaging
        elif img.mode == "1" or img.mode.startswith("I;16"):
            img = img.convert("L" if img.mode == "1" else "I")  # modes Image.reduce does not take
        img = img.reduce(factor)
    return img.transpose(turn) if turn is not None else img


def to_grey(img: Image.Image) -> np.ndarray:
    """Grey levels as float32 in 0..255. Transparency is flattened onto the colour that contrasts with the
    ink, so dark strokes on a transparent canvas and light strokes on one both survive. A picture over WORK_SIDE
    px a side is box-averaged down first."""
    img = _upright_and_small(img)
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
    if isinstance(source, np.ndarray):
        raise ImageError("give an image file or a Pillow image, not an array")
    if isinstance(source, Image.Image):
        return square_pixels(ImageOps.exif_transpose(source), size, grey=channels == 1)
    img = load_image(source)
    ImageOps.exif_transpose(img, in_place=True)  # ours alone: turned without a full-size copy
    return square_pixels(img, size, grey=channels == 1)


def square_pixels(im, size: int, grey: bool) -> np.ndarray:
    """A Pillow image as the folder's training images are stored: uint8, (size, size) grey or
    (3, size, size) RGB, stretched to a square; transparent parts read as white paper."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(canvas, rgba)
    im = im.convert("L" if grey else "RGB").resize((size, size), Image.Resampling.BILINEAR)
    a = np.array(im, dtype=np.uint8)  # a copy: writable, so torch can take it without a warning
    return a if grey else np.ascontiguousarray(a.transpose(2, 0, 1))
