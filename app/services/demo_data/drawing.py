"""Drawing helpers shared by every painter: colours, ellipses, polygons, masks, sampling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from app.services.demo_data.species import RGB, Point


def to_rgb(values: np.ndarray | Sequence[float]) -> RGB:
    r, g, b = (min(255, max(0, round(float(v)))) for v in values)
    return r, g, b


def scaled_tones(base: RGB, factors: np.ndarray) -> list[RGB]:
    """`base` scaled by each factor: one colour per strewn thing."""
    values = np.clip(np.outer(factors, base), 0, 255).round().astype(int)
    return [(r, g, b) for r, g, b in values.tolist()]


def ellipse(
    draw: ImageDraw.ImageDraw,
    x: float,
    y: float,
    rx: float,
    ry: float,
    fill: tuple[int, ...] | int,
) -> None:
    rx, ry = max(rx, 0.5), max(ry, 0.5)  # Pillow rejects inverted boxes
    draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill)


def ellipse_points(
    x: float,
    y: float,
    rx: float,
    ry: float,
    *,
    angle: float = 0.0,
    wobble: np.ndarray | None = None,
) -> list[Point]:
    """A rotated, optionally irregular ellipse as a polygon."""
    n = 16 if wobble is None else len(wobble)
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    k = np.ones(n) if wobble is None else wobble
    px, py = rx * k * np.cos(a), ry * k * np.sin(a)
    c, s = math.cos(angle), math.sin(angle)
    return list(zip(x + px * c - py * s, y + px * s + py * c, strict=True))


def capsule(start: np.ndarray, end: np.ndarray, width: float) -> list[Point]:
    """A stroke with round ends, as a polygon: fingers, limbs."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    heading = math.atan2(end[1] - start[1], end[0] - start[0])
    r = width / 2
    caps = []
    for centre, offset in ((end, -np.pi / 2), (start, np.pi / 2)):
        a = np.linspace(heading + offset, heading + offset + np.pi, 9)
        caps += list(zip(centre[0] + r * np.cos(a), centre[1] + r * np.sin(a), strict=True))
    return caps


def polygon_mask(size: tuple[int, int], outline: Sequence[Point]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(list(outline), fill=255)
    return mask


def ellipse_mask(size: tuple[int, int], x: float, y: float, rx: float, ry: float) -> Image.Image:
    mask = Image.new("L", size, 0)
    ellipse(ImageDraw.Draw(mask), x, y, rx, ry, 255)
    return mask


def clip_paste(layer: Image.Image, texture: Image.Image, mask: Image.Image) -> None:
    """Paint `texture` onto `layer` only inside `mask`, leaving the layer's opacity alone."""
    box = mask.getbbox()
    if box is None:
        return
    texture = texture.crop(box)
    coverage = ImageChops.multiply(texture.getchannel("A"), mask.crop(box))
    layer.paste(texture.convert("RGB"), box[:2], coverage)


def sample_in(mask: Image.Image, n: int, rng: np.random.Generator) -> list[Point]:
    """Up to n random points inside a mask (rejection sampling in its bounding box)."""
    box = mask.getbbox()
    if box is None:
        return []
    inside = np.asarray(mask) > 0
    xs = rng.uniform(box[0], box[2], 4 * n)
    ys = rng.uniform(box[1], box[3], 4 * n)
    keep = inside[ys.astype(int), xs.astype(int)]
    return list(zip(xs[keep][:n].tolist(), ys[keep][:n].tolist(), strict=True))
