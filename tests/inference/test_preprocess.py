"""Preprocessing: any picture of a digit -> MNIST's 28x28 format, and clear errors for what is not one."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnlab.data import lookup
from cnnlab.data.tensors.pictures import MAX_SIDE, ImageError, ImageTooLarge, load_image, to_fashion, to_mnist, to_square

from ..support.pictures import off_centre_dark_on_light, png_bytes


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    """In pixel indices (0..27)."""
    w = img.astype(np.float64)
    idx = np.arange(img.shape[0])
    return float((w.sum(1) * idx).sum() / w.sum()), float((w.sum(0) * idx).sum() / w.sum())


def test_mnist_digits_have_their_centre_of_mass_where_we_put_it(real_mnist):
    coms = np.array([centre_of_mass(real_mnist.test_images[i].numpy()) for i in range(500)])
    assert np.abs(np.median(coms, 0) - 14).max() < 0.25


def test_test_digits_drawn_big_dark_and_off_centre_come_back_close_to_the_originals(real_mnist):
    # MNIST's digits were anti-aliased from higher-resolution scans, which a 28x28 original scaled up cannot
    # give back exactly; so the claim is about the bulk: the median digit and nearly every digit >= 0.9.
    corr = np.array([
        correlation(to_mnist(png_bytes(off_centre_dark_on_light(real_mnist.test_images[i].numpy()))), real_mnist.test_images[i].numpy())
        for i in range(200)
    ])
    assert np.median(corr) >= 0.93, np.median(corr)
    assert (corr >= 0.9).mean() >= 0.9, (corr >= 0.9).mean()
    assert corr.min() >= 0.75, corr.min()


def test_output_is_white_on_black_20px_box_centred_by_mass():
    img = Image.new("L", (300, 120), 255)  # a wide dark bar on white, far from the centre
    img.paste(0, (200, 20, 290, 60))
    out = to_mnist(img)
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    ys, xs = np.nonzero(out > 40)
    assert xs.max() - xs.min() + 1 == 20  # the longer side scaled to 20 px
    assert 7 <= ys.max() - ys.min() + 1 <= 10  # aspect ratio kept: 90 x 40 -> 20 x 9
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert out[0, 0] == 0 and out.max() == 255


def test_polarity_and_colour_mode_do_not_matter():
    g = np.zeros((80, 60), dtype=np.uint8)
    g[10:70, 25:35] = 255  # a "1", light on dark
    a = to_mnist(Image.fromarray(g))
    b = to_mnist(Image.fromarray(255 - g))  # dark on light
    c = to_mnist(Image.fromarray(np.stack([255 - g] * 3, -1)))  # RGB
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).max() <= 1


@pytest.mark.parametrize("ink", [(0, 0, 0), (255, 255, 255)])
def test_strokes_on_a_transparent_canvas_survive_whatever_their_colour(ink):
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[20:80, 45:55, :3] = ink
    rgba[20:80, 45:55, 3] = 255  # opaque stroke, transparent elsewhere
    out = to_mnist(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert out.max() == 255 and (out > 0).sum() > 20
    assert out[14, 14] > 200  # the stroke is the ink, at the centre


def test_a_blank_image_has_no_ink():
    with pytest.raises(ImageError, match="no ink"):
        to_mnist(png_bytes(Image.new("L", (50, 50), 200)))


def _png_with_size(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (the pixel data is not needed to test the size check)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, error, words",
    [
        (b"", ImageError, "empty"),
        (b"this is not an image at all", ImageError, "not an image"),
        (png_bytes(Image.new("L", (64, 64), 0))[:60], ImageError, "decoded"),  # truncated
        (_png_with_size(0, 0), ImageError, "no pixels|decoded|not an image"),
        (_png_with_size(MAX_SIDE + 1, 10), ImageTooLarge, "at most"),
        (b"\x89PNG" + b"\0" * (4 * 2**20 + 1), ImageTooLarge, "limit"),
    ],
    ids=["empty", "not-an-image", "truncated", "zero-size", "too-wide", "too-many-bytes"],
)
def test_bad_inputs_get_one_clear_error(data, error, words, reliability):
    with pytest.raises(error, match=words):
        to_mnist(load_image(data))
    reliability("images to predict", "empty, not an image, truncated, zero-size, over 4096 px a side, over 4 MB", 1,
                "one ImageError naming the problem (the size limits checked before decoding)")


def test_a_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        to_mnist(tmp_path / "nope.png")


def _not_regular_files(tmp_path) -> dict[str, tuple[object, str]]:
    """Paths that are not image files, by kind, with the words their error must hold."""
    import os

    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")  # reading one would block until a writer came
    (tmp_path / "dangling").symlink_to(tmp_path / "gone.png")
    return {
        "directory": (tmp_path / "folder", "is a directory"),
        "named pipe": (tmp_path / "fifo", "is a named pipe"),
        "device": ("/dev/null", "is a device"),
        "dangling link": (tmp_path / "dangling", "cannot read"),
    }


def test_what_is_not_a_regular_file_is_an_image_error_before_it_is_opened(tmp_path, reliability):
    cases = _not_regular_files(tmp_path)
    for kind, (path, words) in cases.items():
        with pytest.raises(ImageError, match=words):
            load_image(path)
        with pytest.raises(ImageError, match=words):
            to_square(str(path), 16, 3)  # the image-folder preparation reads files the same way
    reliability("images to predict", "a directory, a named pipe, a device, a dangling link given as the image", len(cases),
                "one ImageError naming what the path is; a pipe is never opened, so nothing blocks")


def test_a_file_that_cannot_be_read_is_an_image_error(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads a file without read permission")
    path = tmp_path / "locked.png"
    path.write_bytes(png_bytes(Image.new("L", (8, 8), 0)))
    path.chmod(0)
    with pytest.raises(ImageError, match="cannot read .*Permission denied"):
        load_image(path)


def _garment() -> np.ndarray:
    """A shirt-like shape in Fashion-MNIST's layout: light on black, 28 px tall (the longer side), centred."""
    img = Image.new("L", (28, 28), 0)
    d = ImageDraw.Draw(img)
    d.rectangle((8, 0, 19, 27), fill=200)  # body
    d.rectangle((4, 0, 23, 9), fill=160)  # sleeves
    d.rectangle((12, 0, 15, 3), fill=0)  # collar
    return np.asarray(img)


def test_a_garment_photographed_large_on_white_comes_back_in_fashion_mnists_format():
    garment = _garment()
    item = Image.fromarray(255 - garment).resize((140, 140), Image.Resampling.BICUBIC)
    for background, at in ((255, (30, 5)), (235, (0, 60))):  # white paper; light grey, in a corner
        photo = Image.new("L", (220, 210), background)
        photo.paste(Image.fromarray(np.clip(np.asarray(item).astype(int) - (255 - background), 0, 255).astype(np.uint8)), at)
        out = to_fashion(png_bytes(photo.convert("RGB")))
        assert out.shape == (28, 28) and out.dtype == np.uint8
        assert correlation(out, garment) > 0.95
        assert out[:, :2].max() <= 10 and out[:, -2:].max() <= 10  # narrower than tall: centred, black at the sides
        assert np.abs(out.astype(int) - garment.astype(int)).mean() < 25


def test_a_garment_on_black_is_taken_as_it_is_and_a_blank_photo_has_no_item():
    garment = _garment()
    photo = Image.new("L", (100, 80), 0)
    photo.paste(Image.fromarray(garment).resize((56, 56), Image.Resampling.BICUBIC), (10, 12))
    assert correlation(to_fashion(photo), garment) > 0.95
    with pytest.raises(ImageError, match="no item"):
        to_fashion(Image.new("L", (50, 50), 240))


def test_each_data_set_gets_its_own_preparation():
    photo = Image.new("RGB", (90, 60), (250, 250, 250))
    ImageDraw.Draw(photo).ellipse((20, 10, 60, 50), fill=(200, 30, 30))
    digit, garment = png_bytes(photo), png_bytes(photo)
    assert (lookup("mnist").prepare(digit) == to_mnist(digit)).all()
    assert (lookup("fashion-mnist").prepare(garment) == to_fashion(garment)).all()
    rgb = lookup("imagefolder:/x").prepare(png_bytes(photo), 3, 32)
    assert rgb.shape == (3, 32, 32) and rgb[0, 16, 16] > 150 and rgb[1, 16, 16] < 80  # red stays red
    grey = to_square(photo, 24, channels=1)
    assert grey.shape == (24, 24) and grey[0, 0] > 240


# ---- memory: the decoded size is bounded before decoding -------------------------------------------------


def _png_header(w: int, h: int, bit_depth: int, colour_type: int) -> bytes:
    """A PNG that claims w x h at this depth and colour type, with no pixel data: what a size check sees."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _seven(size: int, mode: str = "L") -> Image.Image:
    """A thick dark 7 on light paper, `size` px a side."""
    img = Image.new(mode, (size, size), "white" if mode != "L" else 230)
    s = size / 100
    ImageDraw.Draw(img).line([(25 * s, 20 * s), (75 * s, 20 * s), (45 * s, 85 * s)], fill="black" if mode != "L" else 20,
                             width=max(1, round(10 * s)))
    return img


def test_a_picture_over_the_decoded_budget_is_refused_before_its_pixels_are_read(reliability):
    from cnnlab.data.tensors.pictures import MAX_DECODED_BYTES

    # 4096x4096 16-bit RGBA: 64 MB decoded, a few hundred bytes here, 137 KB as a real file.
    for header, words in [(_png_header(4096, 4096, 16, 6), "4096x4096 RGBA, 64 MB once decoded"),
                          (_png_header(4096, 4096, 8, 2), "4096x4096 RGB, 64 MB"),
                          (_png_header(3000, 3000, 8, 3), "3000x3000 P, 34 MB")]:  # a palette becomes RGBA
        with pytest.raises(ImageTooLarge, match=words):
            load_image(header)
    # Within the budget, the same kind of header gets as far as decoding (and fails there: it holds no pixels).
    assert 2048 * 2048 * 4 <= MAX_DECODED_BYTES
    with pytest.raises(ImageError, match="decoded") as e:
        load_image(_png_header(2048, 2048, 16, 6))
    assert not isinstance(e.value, ImageTooLarge)
    reliability("images to predict", "PNG headers of 4096x4096 16-bit RGBA, RGB and 3000x3000 palette pictures "
                "(64, 64, 34 MB once decoded) in a few bytes", 3,
                "ImageTooLarge naming the decoded size, before any pixel is decoded")


def test_the_largest_pictures_allowed_are_prepared(tmp_path):
    for img in (_seven(2048, "RGBA"), _seven(4096)):  # at the budget: 16 MB each, colour and grey
        digit = to_mnist(png_bytes(img))
        assert digit.shape == (28, 28) and digit.max() == 255


def test_a_phone_sized_jpeg_is_decoded_smaller_and_reads_as_the_same_digit():
    from cnnlab.data.tensors.pictures import MAX_DECODED_BYTES, decoded_bytes

    big = _seven(3024, "RGB").resize((4032, 3024))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    assert decoded_bytes(big) > MAX_DECODED_BYTES  # 49 MB: over the budget at full size
    loaded = load_image(buf.getvalue())
    assert loaded.size == (2016, 1512) and decoded_bytes(loaded) <= MAX_DECODED_BYTES  # the JPEG decoded at 1/2
    small = _seven(756, "RGB").resize((1008, 756))
    assert correlation(to_mnist(loaded), to_mnist(png_bytes(small))) > 0.97


def test_a_big_picture_shrunk_before_the_float_steps_reads_as_the_same_digit():
    big, small = _seven(4000), _seven(1000)
    assert correlation(to_mnist(png_bytes(big)), to_mnist(png_bytes(small))) > 0.97


def test_the_exif_orientation_of_a_shrunk_picture_is_still_applied():
    upright = _seven(2400)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 270 to view
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif)
    assert np.array_equal(to_mnist(buf.getvalue()), to_mnist(png_bytes(upright)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_float_picture_with_pixels_that_are_not_numbers_is_an_image_error(bad, reliability):
    pixels = np.zeros((28, 28), np.float32)
    pixels[10:18, 12:16] = 200.0
    pixels[3, 3] = bad
    buf = io.BytesIO()
    Image.fromarray(pixels, "F").save(buf, format="TIFF")
    for prepare in (to_mnist, to_fashion, lambda b: to_square(b, 16, 1)):
        with pytest.raises(ImageError, match="not numbers"):
            prepare(buf.getvalue())
    reliability("images to predict", "a 28x28 float TIFF with one NaN, +inf or -inf pixel, for each preparation", 3,
                "one ImageError: pixels that are not numbers")
