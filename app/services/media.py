"""Which file on disk a media request may see: found by database lookup, never by a request path.

A stored photo's `path` is relative to the data directory; it is still resolved and checked to
lie inside the data directory before it is served (a bad row, a `..`, or a symbolic link out of
the data directory all end in "not found"). A missing thumbnail is drawn again on first request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

from app.models import DownloadState, Image
from app.services.thumbnails import make_thumbnail, thumbnail_path

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
# A content-addressed file never changes under its name; a browser may keep it for a year.
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"


class MediaNotFound(LookupError):
    """Nothing to serve; the message says why (HTTP 404)."""


@dataclass(frozen=True)
class MediaFile:
    path: Path  # absolute, inside the data directory
    content_type: str
    cache_control: str
    etag: str | None


def contained(data_dir: Path, relative: str | Path) -> Path | None:
    """`data_dir / relative`, resolved, if it lies inside the data directory; else None."""
    root = data_dir.resolve()
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root) and candidate != root else None


def _content_addressed(image: Image, path: Path) -> bool:
    return bool(image.sha256) and path.stem == image.sha256


def original(image: Image | None, data_dir: Path) -> MediaFile:
    """The stored photo of `image`."""
    if image is None:
        raise MediaNotFound("there is no such image")
    if image.download_state != DownloadState.done or not image.path:
        raise MediaNotFound("this photo has not been downloaded")
    path = contained(data_dir, image.path)
    if path is None:
        log.warning("image %s has a path outside the data directory; not served", image.id)
        raise MediaNotFound("this photo's file is not in the data directory")
    if not path.is_file():
        raise MediaNotFound("this photo's file is missing from the data directory")
    immutable = _content_addressed(image, path)
    return MediaFile(
        path=path,
        content_type=CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        cache_control=IMMUTABLE if immutable else REVALIDATE,
        etag=f'"{image.sha256}"' if immutable else None,
    )


def thumbnail(image: Image | None, data_dir: Path) -> MediaFile:
    """The WebP thumbnail of `image`, made from the stored photo if it is missing."""
    source = original(image, data_dir)
    assert image is not None and image.sha256
    path = contained(data_dir, thumbnail_path(image.sha256))
    if path is None:  # pragma: no cover - the name is built from a hex digest
        raise MediaNotFound("no thumbnail")
    if not path.is_file():
        try:
            make_thumbnail(source.path, data_dir, image.sha256)
        except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
            log.warning("cannot make a thumbnail of image %s: %s", image.id, exc)
            raise MediaNotFound("no thumbnail can be made of this photo") from None
    return MediaFile(path=path, content_type="image/webp", cache_control=IMMUTABLE,
                     etag=f'"t-{image.sha256}"')  # fmt: skip
