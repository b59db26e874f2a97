"""Near-duplicate photos by perceptual hash (imagehash's DCT `phash`, 64 bits).

Two photos are near-duplicates when their hashes differ in at most `threshold` bits; groups are
the connected components of that relation. A group whose photos sit under more than one species
is a label conflict (the same picture cannot be two species); otherwise it is a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

from app.services.photos import MAX_PIXELS

DEFAULT_THRESHOLD = 4  # bits of 64; other photos of one specimen land at 2-6
_CHUNK = 1024


def phash(path: Path) -> str:
    """The 64-bit perceptual hash of an upright photo, as 16 hex digits."""
    try:
        with PILImage.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"{path.name}: too large ({image.width}x{image.height} pixels)")
            image.draft("L", (256, 256))
            return str(imagehash.phash(ImageOps.exif_transpose(image)))
    except (OSError, PILImage.DecompressionBombError) as exc:
        raise ValueError(f"{path.name}: not a readable image ({exc})") from None


@dataclass(frozen=True)
class DuplicateGroup:
    image_ids: tuple[int, ...]
    species_ids: tuple[int, ...]  # distinct, sorted
    max_distance: int  # largest Hamming distance of a linking pair

    @property
    def conflict(self) -> bool:
        return len(self.species_ids) > 1

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": "conflict" if self.conflict else "duplicate",
            "image_ids": list(self.image_ids),
            "species_ids": list(self.species_ids),
            "max_distance": self.max_distance,
        }


def _bits(hashes: Sequence[str]) -> np.ndarray:
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).astype(np.uint8)


def hamming_pairs(hashes: Sequence[str], threshold: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair i < j within `threshold` bits; vectorised in blocks."""
    if not hashes:
        return []
    bits = _bits(hashes).astype(np.int32)
    ones = bits.sum(axis=1)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), _CHUNK):
        block = bits[start : start + _CHUNK]
        # |a xor b| = |a| + |b| - 2 |a and b|
        distance = ones[start : start + len(block), None] + ones[None, :] - 2 * (block @ bits.T)
        rows, cols = np.nonzero(distance <= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c:
                pairs.append((i, c, int(distance[r, c])))
    return pairs


def find_groups(
    image_ids: Sequence[int],
    species_ids: Sequence[int],
    hashes: Sequence[str],
    threshold: int = DEFAULT_THRESHOLD,
) -> list[DuplicateGroup]:
    """Groups of near-duplicates within and across species, largest first."""
    if not 0 <= threshold <= 64:
        raise ValueError(f"the duplicate threshold must be between 0 and 64 bits, got {threshold}")
    if not len(image_ids) == len(species_ids) == len(hashes):
        raise ValueError("image_ids, species_ids and hashes must have the same length")
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    linked: dict[int, int] = {}
    for i, j, distance in hamming_pairs(hashes, threshold):
        a, b = root(i), root(j)
        if a != b:
            parent[b] = a
        linked[i] = max(linked.get(i, 0), distance)
        linked[j] = max(linked.get(j, 0), distance)
    members: dict[int, list[int]] = {}
    for i in linked:
        members.setdefault(root(i), []).append(i)
    groups = [
        DuplicateGroup(
            image_ids=tuple(sorted(image_ids[i] for i in idx)),
            species_ids=tuple(sorted({species_ids[i] for i in idx})),
            max_distance=max(linked[i] for i in idx),
        )
        for idx in members.values()
        if len(idx) > 1
    ]
    return sorted(groups, key=lambda g: (-len(g.image_ids), g.image_ids))
