"""Peak memory of preparing one picture: the worst cases the size limits allow, and some they refuse.

    python benchmarks/picture_memory.py

Each picture is prepared in a fresh process (to_mnist, then to_square as an image-folder model's preparation);
the figure is the growth of the process's peak resident size while it is prepared: the peak (VmHWM) is reset
just before, through /proc/self/clear_refs (Linux), so the imports' own peak does not hide it. It counts what
Pillow and NumPy allocate while decoding and preparing. Prints a Markdown table; the README quotes its maxima.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MEASURE = """
import sys
from cnnlab.data.tensors.pictures import to_mnist, to_square
def status(key):  # kB, from the kernel's account of this process
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
data = open(sys.argv[1], "rb").read()
to_square(open(sys.argv[2], "rb").read(), 16, 3)  # first-use allocations, on a tiny picture
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the present size (Linux >= 4.0)
before = status("VmRSS")
try:
    to_mnist(data) if sys.argv[3] == "to_mnist" else to_square(data, 64, 3)
    outcome = "prepared"
except Exception as e:
    outcome = type(e).__name__
print(outcome, (status("VmHWM") - before) / 1024)
"""

def _png16_rgba(w: int, h: int) -> bytes:
    """A 16-bit RGBA PNG (Pillow writes none): black, opaque, with a white bar; it compresses to almost nothing."""
    row = np.zeros((w, 4), ">u2")
    row[:, 3] = 65535
    bar = row.copy()
    bar[w // 3 : w // 2, :3] = 65535
    raw = b"".join(b"\0" + (bar if h // 4 < y < 3 * h // 4 else row).tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _drawing(mode: str, w: int, h: int) -> Image.Image:
    img = Image.new(mode, (w, h))
    ImageDraw.Draw(img).rectangle((w // 3, h // 4, w // 2, 3 * h // 4), fill="white" if mode not in ("F", "I;16") else 200)
    return img


def pictures() -> dict[str, bytes]:
    la = _drawing("LA", 2048, 2048)
    return {
        "4096x4096 16-bit RGBA PNG (a crafted header)": _png16_rgba(4096, 4096),
        "2048x2048 16-bit RGBA PNG": _png16_rgba(2048, 2048),
        "2048x2048 grey+alpha PNG": _encoded(la, "PNG"),
        "2048x2048 palette PNG, transparent": _encoded(_drawing("RGB", 2048, 2048).convert("P"), "PNG", transparency=0),
        "2048x2048 float TIFF": _encoded(_drawing("F", 2048, 2048), "TIFF", compression="tiff_adobe_deflate"),
        "4096x4096 grey PNG": _encoded(_drawing("L", 4096, 4096), "PNG"),
        "4096x4096 1-bit PNG": _encoded(_drawing("L", 4096, 4096).convert("1"), "PNG"),
        "4032x3024 RGB JPEG (a phone's)": _encoded(_drawing("RGB", 4032, 3024), "JPEG", quality=80),
        "4096x4096 RGB JPEG": _encoded(_drawing("RGB", 4096, 4096), "JPEG", quality=80),
    }


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "tiny.png"
        tiny.write_bytes(_encoded(_drawing("RGB", 32, 32), "PNG"))
        for name, data in pictures().items():
            path = Path(tmp) / "picture"
            path.write_bytes(data)
            cells = [name, f"{len(data) / 1024:,.0f} KB"]
            for how in ("to_mnist", "to_square"):
                out = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(tiny), how], capture_output=True,
                                     text=True, check=True).stdout.split()
                cells.append(f"{out[0]}, {float(out[1]):.0f} MB")
            rows.append(cells)
    print("| picture | file | to_mnist (digit, garment): outcome, peak RSS growth | to_square (image folder) |")
    print("|---|--:|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
