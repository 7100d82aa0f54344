"""An image folder is held within memory budgets: each picture within the decoded size one picture may take
(checked from its header, before its pixels are decoded; a JPEG decoded smaller to fit), and the whole folder,
made square, within its own budget. Memory is measured in a child process, against its own peak after imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from cnnlab.data import DataError, load_imagefolder

from ..support.data import draw_folder

# What a child process reports: its peak resident memory grown past the peak it had once the code under test
# was imported and had loaded a small folder (so that imports and Pillow's plugins are in the baseline).
_CHILD = textwrap.dedent("""
    import json, resource, sys
    import contextlib, io
    from cnnlab.cli import main
    from cnnlab.data import load_imagefolder
    import cnnlab.train  # what cnnlab train imports, in the baseline
    load_imagefolder(sys.argv[1])
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    err, out = io.StringIO(), {}
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        if sys.argv[2] == "train":
            out["code"] = main(json.loads(sys.argv[3]))
        else:
            d = load_imagefolder(sys.argv[3], image_size=16)
            out["shape"] = list(d.train_images.shape)
    out["growth"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - base
    out["stderr"] = err.getvalue()
    print(json.dumps(out))
""")


def _in_child(warm_folder: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(warm_folder), *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _big_pngs(root: Path) -> list[Path]:
    """Four 8000x8000 RGBA PNGs in two classes: one colour each, so about 260 KB on disk and 244 MB decoded."""
    first = root / "a" / "0.png"
    first.parent.mkdir(parents=True)
    Image.new("RGBA", (8000, 8000), (20, 200, 30, 255)).save(first)
    files = [first, root / "a" / "1.png", root / "b" / "2.png", root / "b" / "3.png"]
    files[2].parent.mkdir()
    for f in files[1:]:
        shutil.copyfile(first, f)
    return files


@pytest.fixture(scope="module")
def warm_folder(tmp_path_factory) -> Path:
    return draw_folder(tmp_path_factory.mktemp("warm") / "shapes", per_class=3)


@pytest.mark.processes  # measured in a fresh process
def test_huge_pictures_are_refused_from_their_headers_in_one_line_naming_each_file(tmp_path, warm_folder, reliability):
    root = tmp_path / "big"
    files = _big_pngs(root)
    assert sum(f.stat().st_size for f in files) < 2 * 2**20  # small on disk; the danger is the decoded size
    argv = ["train", "--model", "basic_cnn", "--dataset", f"imagefolder:{root}", "--epochs", "1",
            "--out", str(tmp_path / "runs"), "--no-progress", "--device", "cpu"]
    got = _in_child(warm_folder, "train", json.dumps(argv))
    assert got["code"] == 1
    lines = got["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab train: error: imagefolder "), got["stderr"]
    for f in files:
        assert f"{f.relative_to(root)} (8000x8000 RGBA, 244 MB)" in lines[0]
    assert "16 MB one picture may take once decoded" in lines[0]
    # Before the headers were checked, the four were decoded whole: 2.2 GB. Now none is: less than one of them.
    assert got["growth"] < 244 * 2**20, f"peak memory grew {got['growth'] / 2**20:.0f} MB"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    reliability("image folders", "four 8000x8000 RGBA PNGs (1 MB on disk, 244 MB each decoded) trained on", 4,
                "one line naming each file, its size and the 16 MB limit, from the headers alone; exit 1; peak memory "
                "grew less than one of them decoded (2.2 GB when all four were decoded)")


@pytest.mark.processes  # measured in a fresh process
def test_a_jpeg_over_the_budget_is_decoded_smaller_and_the_folder_loads(tmp_path, warm_folder):
    root = draw_folder(tmp_path / "shapes", per_class=4)
    # 6000x4000 colour: 96 MB decoded at full size, so it is decoded at a quarter of each side (6 MB)
    Image.new("RGB", (6000, 4000), (40, 90, 200)).save(root / "circle" / "photo.jpg", quality=80)
    got = _in_child(warm_folder, "load", str(root))
    assert got["stderr"] == ""
    assert got["shape"][1:] == [3, 16, 16] and got["shape"][0] + 3 == 3 * 4 + 1  # 3 test images, 1 per class
    assert got["growth"] < 48 * 2**20, f"peak memory grew {got['growth'] / 2**20:.0f} MB"  # half the full decode


def test_a_folder_over_its_whole_budget_is_refused_naming_the_budget_and_the_need(tmp_path, reliability):
    root = draw_folder(tmp_path / "shapes", per_class=5)
    need = 15 * 3 * 32 * 32  # 15 colour images, 32x32
    d = load_imagefolder(root, image_size=32, max_bytes=need)  # exactly the budget: loaded
    assert d.train_images.shape[1:] == (3, 32, 32) and len(d.train_images) + len(d.test_images) == 15
    # the mean and deviation the runs normalise with, as of the whole training set (summed in parts)
    pixels = d.train_images.double().div(255)
    assert d.mean == pytest.approx(float(pixels.mean()), rel=1e-9)
    assert d.std == pytest.approx(float(pixels.std()), rel=1e-9)
    with pytest.raises(DataError) as info:
        load_imagefolder(root, image_size=32, max_bytes=need - 1)
    message = str(info.value)
    assert "\n" not in message
    assert f"15 images at 32x32 RGB would take {need:,} bytes in memory, over the {need - 1:,} bytes budget" in message
    assert "a smaller --image-size (at most 31)" in message
    with pytest.raises(DataError, match="fewer images would fit"):
        load_imagefolder(root, image_size=32, max_bytes=15 * 3 - 1)  # not even one pixel each
    reliability("image folders", "a folder whose square images would take one byte over its memory budget", 1,
                "one DataError naming the need and the budget, and the largest --image-size that fits")
