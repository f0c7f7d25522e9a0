"""Image decoding (PROTOCOLS §1.4): every kind of PNG transparency is composited onto white.

PNG's tRNS chunk marks one grey level (colour type 0) or one RGB colour (type 2) as fully transparent,
or gives alpha per palette entry (type 3); types 4 and 6 carry an alpha channel."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from xdomain_bench.data.images import load_image
from xdomain_bench.errors import DataError


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Path, colour_type: int, rows: list[bytes], trns: bytes | None = None,
              plte: bytes | None = None) -> Path:
    """A PNG written byte by byte from the specification (8-bit depth, filter 0), not with PIL."""
    width = len(rows[0]) // {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    ihdr = struct.pack(">IIBBBBB", width, len(rows), 8, colour_type, 0, 0, 0)
    body = b"".join(_chunk(k, v) for k, v in ((b"PLTE", plte), (b"tRNS", trns)) if v is not None)
    raw = b"".join(b"\x00" + r for r in rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + body + _chunk(b"IDAT", zlib.compress(raw))
                     + _chunk(b"IEND", b""))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))


def test_greyscale_trns_level_becomes_white(tmp_path):
    png = write_png(tmp_path / "l.png", 0, [bytes([0, 100])], trns=struct.pack(">H", 0))
    im = load_image(png)
    assert im.mode == "RGB" and [im.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (100, 100, 100)]


def test_rgb_trns_colour_becomes_white(tmp_path):
    png = write_png(tmp_path / "rgb.png", 2, [bytes([10, 20, 30, 10, 20, 31])], trns=struct.pack(">HHH", 10, 20, 30))
    im = load_image(png)
    assert [im.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (10, 20, 31)]


def test_palette_alpha_and_alpha_channels_blend_onto_white(tmp_path):
    pal = write_png(tmp_path / "p.png", 3, [bytes([0, 1])], plte=bytes([0, 0, 0, 200, 0, 0]), trns=bytes([0, 255]))
    assert [load_image(pal).getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (200, 0, 0)]
    rgba = write_png(tmp_path / "rgba.png", 6, [bytes([0, 0, 0, 0, 0, 0, 0, 255])])
    assert [load_image(rgba).getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (0, 0, 0)]
    la = write_png(tmp_path / "la.png", 4, [bytes([0, 0, 0, 128])])
    half = load_image(la).getpixel((1, 0))  # black at alpha 128/255 over white
    assert half == (127, 127, 127)


def test_inversion_happens_after_compositing(tmp_path):
    png = write_png(tmp_path / "l.png", 0, [bytes([0, 100])], trns=struct.pack(">H", 0))
    assert [load_image(png, invert=True).getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (155, 155, 155)]


def test_bad_image_hint_names_an_option_that_run_accepts(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    for name in ("empty.png", "cut.png"):
        with pytest.raises(DataError) as exc:
            load_image(tmp_path / name)
        assert "--set data.skip_bad_images=true" in str(exc.value) and "\n" not in str(exc.value)
