"""Image decoding (PROTOCOLS.md §1.4): alpha onto white, RGB, optional inversion."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError


def load_image(path: str | Path, invert: bool = False) -> Image.Image:
    """Open an image as RGB; raise DataError naming the file when it is missing, empty or truncated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image listed in the manifest is missing: {path}; re-check the dataset tree or rebuild the manifest")
    if path.stat().st_size == 0:
        raise DataError(f"zero-byte image: {path}; re-download it or pass --skip-bad-images")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"unreadable or truncated image: {path} ({exc}); re-download it or pass --skip-bad-images") from None
    return ImageOps.invert(rgb) if invert else rgb
