"""Pictures of digits as a user hands them in (a PNG file's bytes, a photo of ink on paper), made from MNIST's own."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(img: Image.Image) -> bytes:
    """`img` as the bytes of a PNG file."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def off_centre_dark_on_light(digit: np.ndarray, scale: int = 5, at=(25, 40), size: int = 200) -> Image.Image:
    """An MNIST digit scaled up, inverted to dark ink on a light grey canvas, and pasted off centre."""
    big = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    ink = np.asarray(big, dtype=np.float32) / 255.0
    canvas = np.full((size, size), 235.0, dtype=np.float32)
    y, x = at
    region = canvas[y : y + 28 * scale, x : x + 28 * scale]
    canvas[y : y + 28 * scale, x : x + 28 * scale] = region * (1 - ink) + 20.0 * ink
    return Image.fromarray(np.round(canvas).astype(np.uint8))


def one_per_class(mnist, n: int = 10) -> list[int]:
    """The index of the first test image of each class 0..n-1."""
    labels = mnist.test_labels.tolist()
    return [labels.index(c) for c in range(n)]
