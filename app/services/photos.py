"""Photo files: verification, hashing and where a stored photo lives.

Shared by the folder import and the downloader, so both accept the same photos, reject the
same ones with the same reasons, and lay them out the same way under the data directory:
`images/<species folder>/<sha256[:2]>/<sha256>.<ext>`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import NamedTuple

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

# Pillow refuses images above this many pixels (decompression bombs).
MAX_PIXELS = 64_000_000
IMAGES_DIR = "images"
# The formats we store, and the suffix each is stored under (MPO: multi-picture JPEG from phones).
FORMAT_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp"}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ImageInfo(NamedTuple):
    width: int
    height: int
    format: str


def probe_image(path: Path) -> ImageInfo:
    """Decode the whole file; its size and format, or ValueError with the reason."""
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        with PILImage.open(path) as probe:
            probe.verify()  # structure and checksums
        with PILImage.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"too large ({image.width}x{image.height} pixels)")
            image.load()  # actually decode: catches truncated files that verify() misses
            return ImageInfo(image.width, image.height, image.format or "")
    except (UnidentifiedImageError, PILImage.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image ({exc.__class__.__name__})") from None
    except OSError as exc:
        raise ValueError(f"damaged image ({exc})") from None


def verify_image(path: Path) -> tuple[int, int]:
    """Decode the whole file; returns (width, height) or raises ValueError with the reason."""
    info = probe_image(path)
    return info.width, info.height


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def species_folder(name: str) -> str:
    """A species' folder name: `Amanita muscaria` → `Amanita_muscaria`, never a path."""
    folder = _UNSAFE.sub("_", "_".join(name.split())).strip("._")
    return folder or "unnamed"


def stored_path(folder: str, sha256: str, suffix: str) -> Path:
    """Where a photo lives, relative to the data directory (content-addressed)."""
    return Path(IMAGES_DIR, folder, sha256[:2], sha256 + suffix.lower())
