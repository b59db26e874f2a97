"""Thumbnails: one WebP per distinct photo, made once, named by the photo's sha256."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps

from app.services.photos import MAX_PIXELS

THUMBS_DIR = "thumbs"
THUMB_SIZE = 320  # longest side, px: sharp in a 160 px grid cell on a 2x screen
THUMB_QUALITY = 80
# libwebp's effort (0-6): 0 encodes about twice as fast as 4 for a few percent more bytes,
# and thumbnails are made on the download's critical path.
THUMB_METHOD = 0


def thumbnail_path(sha256: str) -> Path:
    """Relative to the data directory; two-character fan-out keeps folders small."""
    return Path(THUMBS_DIR, sha256[:2], f"{sha256}.webp")


def make_thumbnail(source: Path, data_dir: Path, sha256: str) -> Path:
    """Write the thumbnail for `source` unless it exists; returns its relative path.

    EXIF orientation is applied, so a phone photo taken sideways shows upright.
    """
    relative = thumbnail_path(sha256)
    target = data_dir / relative
    if target.exists():
        return relative
    target.parent.mkdir(parents=True, exist_ok=True)
    with PILImage.open(source) as image:
        if image.width * image.height > MAX_PIXELS:  # opening reads the header only
            raise ValueError(f"too large to draw ({image.width}x{image.height} pixels)")
        thumb = ImageOps.exif_transpose(image).convert("RGB")
        thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), PILImage.Resampling.LANCZOS)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".thumb-", suffix=".webp")
    try:
        with os.fdopen(fd, "wb") as out:
            thumb.save(out, "WEBP", quality=THUMB_QUALITY, method=THUMB_METHOD)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return relative
