"""Image decoding (PROTOCOLS.md §1.4): transparency onto white, RGB, optional inversion."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

# How to go on without a bad image, in the words of the commands that accept it.
SKIP_HINT = ("re-download it, or skip unreadable images with `xbench run ... --set data.skip_bad_images=true` "
             "(`xbench data verify --skip-bad-images` lists them without failing)")


def has_transparency(im: Image.Image) -> bool:
    """An alpha band (RGBA, LA, PA, ...) or a PNG tRNS entry (palette, L, RGB or I modes)."""
    return "A" in im.getbands() or "transparency" in im.info


def to_rgb(im: Image.Image) -> Image.Image:
    """Composite any transparency onto white, then convert to RGB."""
    if has_transparency(im):
        rgba = im.convert("RGBA")  # PIL turns a tRNS colour or palette entry into alpha 0
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), rgba)
    return im.convert("RGB")


def load_image(path: str | Path, invert: bool = False) -> Image.Image:
    """Open an image as RGB; raise DataError naming the file when it is missing, empty or truncated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image listed in the manifest is missing: {path}; re-check the dataset tree or rebuild the manifest")
    if path.stat().st_size == 0:
        raise DataError(f"zero-byte image: {path}; {SKIP_HINT}")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"unreadable or truncated image: {path} ({exc}); {SKIP_HINT}") from None
    return ImageOps.invert(rgb) if invert else rgb
