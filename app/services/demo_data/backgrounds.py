"""Scenes behind the subject: value-noise helpers and the ground and bark painters."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from app.services.demo_data.drawing import ellipse, ellipse_points, scaled_tones, to_rgb
from app.services.demo_data.species import RGB
from app.services.demo_data.specimen import Specimen


def background_for(specimen: Specimen, rng: np.random.Generator, size: int) -> Image.Image:
    """The specimen's scene, cropped differently per photo and slightly out of focus."""
    big = round(size * 1.2)
    scene_rng = np.random.default_rng(specimen.background_seed)
    scene = _BACKGROUNDS[specimen.background](scene_rng, big)
    left, top = (int(v) for v in rng.integers(0, big - size + 1, 2))
    scene = scene.crop((left, top, left + size, top + size))
    # Exposed for the subject, the surroundings fall darker and duller.
    scene = Image.blend(scene, Image.new("RGB", scene.size, (40, 38, 30)), 0.3)
    return scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2) * size / 256))


def fractal(rng: np.random.Generator, size: int, cells: Sequence[tuple[int, int]]) -> np.ndarray:
    """Smooth value noise in [0, 1]: random grids of (rows, cols) upsampled and summed."""
    total = np.zeros((size, size), dtype=np.float32)
    for i, (rows, cols) in enumerate(cells):
        grid = (rng.random((rows, cols)) * 255).astype(np.uint8)
        up = Image.fromarray(grid, "L").resize((size, size), Image.Resampling.BICUBIC)
        total += np.asarray(up, dtype=np.float32) * 0.6**i
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def colorize(noise: np.ndarray, dark: RGB, light: RGB) -> Image.Image:
    """Map noise in [0, 1] onto a dark-to-light palette (a lookup table, so it is cheap)."""
    grey = Image.fromarray(np.clip(noise * 255, 0, 255).astype(np.uint8), "L")
    return ImageOps.colorize(grey, dark, light)


def _grainy(noise: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Per-pixel speckle on top of smooth noise: soil crumbs, moss fronds."""
    return noise + rng.standard_normal(noise.shape, dtype=np.float32) * np.float32(amount)


def _to_mask(opacity: np.ndarray) -> Image.Image:
    """Opacity in [0, 1] as an 8-bit mask."""
    return Image.fromarray((np.clip(opacity, 0, 1) * 255).astype(np.uint8), "L")


def to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _forest_floor(rng: np.random.Generator, size: int) -> Image.Image:
    noise = fractal(rng, size, [(4, 4), (9, 9), (24, 24), (70, 70)])
    image = colorize(_grainy(noise, rng, 0.1), (44, 33, 24), (120, 94, 64))
    draw = ImageDraw.Draw(image)
    n = 140  # fallen needles
    starts = rng.uniform(0, size, (n, 2))
    angles, lengths = rng.uniform(0, np.pi, n), rng.uniform(0.03, 0.07, n) * size
    ends = starts + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    tones = scaled_tones((150, 92, 52), rng.uniform(0.6, 1.2, n))
    width = max(1, round(size / 200))
    for start, end, tone in zip(starts.tolist(), ends.tolist(), tones, strict=True):
        draw.line([tuple(start), tuple(end)], fill=tone, width=width)
    for _ in range(int(rng.integers(2, 5))):  # twigs
        _twig(draw, rng, size)
    return image


def _twig(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    x, y = rng.uniform(0, size, 2)
    angle = rng.uniform(0, np.pi)
    points = [(x, y)]
    for _ in range(4):
        angle += rng.normal(0, 0.3)
        x, y = x + 0.08 * size * math.cos(angle), y + 0.08 * size * math.sin(angle)
        points.append((x, y))
    tone = to_rgb(np.array((70, 52, 36)) * rng.uniform(0.7, 1.4))
    draw.line(points, fill=tone, width=max(1, round(size / 90)), joint="curve")


def _moss(rng: np.random.Generator, size: int) -> Image.Image:
    noise = fractal(rng, size, [(5, 5), (12, 12), (40, 40), (110, 110)])
    image = colorize(_grainy(noise, rng, 0.14), (30, 56, 18), (118, 160, 52))
    draw = ImageDraw.Draw(image)
    n, r = 260, max(0.6, size / 300)  # sporophyte tips catching light
    tips = rng.uniform(0, size, (n, 2)).tolist()
    for (x, y), tone in zip(
        tips, scaled_tones((170, 190, 80), rng.uniform(0.8, 1.2, n)), strict=True
    ):
        ellipse(draw, x, y, r, r, tone)
    return image


def _leaf_litter(rng: np.random.Generator, size: int) -> Image.Image:
    noise = fractal(rng, size, [(4, 4), (10, 10), (30, 30)])
    image = colorize(noise, (60, 42, 26), (112, 82, 50))
    draw = ImageDraw.Draw(image)
    palette = np.array(
        [(160, 90, 35), (190, 130, 50), (120, 70, 30), (150, 52, 30), (200, 160, 70), (98, 80, 42)]
    )
    n = int(rng.integers(55, 85))
    centres = rng.uniform(0, size, (n, 2)).tolist()
    lengths, angles = rng.uniform(0.05, 0.12, n) * size, rng.uniform(0, np.pi, n)
    colours = palette[rng.integers(len(palette), size=n)] * rng.uniform(0.75, 1.15, (n, 1))
    width = max(1, round(size / 300))
    for (x, y), length, angle, colour in zip(centres, lengths, angles, colours, strict=True):
        tone = to_rgb(colour)
        draw.polygon(ellipse_points(x, y, length / 2, length / 5, angle=angle), fill=tone)
        dx, dy = length / 2 * math.cos(angle), length / 2 * math.sin(angle)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=to_rgb(colour * 0.7), width=width)
    return image


def _grass(rng: np.random.Generator, size: int) -> Image.Image:
    noise = fractal(rng, size, [(4, 4), (12, 12), (36, 36)])
    image = colorize(noise, (46, 60, 26), (96, 112, 48))
    draw = ImageDraw.Draw(image)
    palette = np.array(
        [(60, 120, 40), (90, 150, 50), (120, 160, 60), (150, 158, 84), (70, 100, 40)]
    )
    n = 300
    roots = np.stack([rng.uniform(0, size, n), rng.uniform(0, 1.1 * size, n)], axis=1)
    halves = rng.uniform(0.025, 0.065, (n, 1)) * size
    lean = rng.normal(0, 0.35, (n, 1))
    tip_lean = lean + rng.normal(0, 0.25, (n, 1))  # blades bend as they rise
    middles = roots + halves * np.hstack([np.sin(lean), -np.cos(lean)])
    tips = middles + halves * np.hstack([np.sin(tip_lean), -np.cos(tip_lean)])
    colours = palette[rng.integers(len(palette), size=n)] * rng.uniform(0.8, 1.15, (n, 1))
    width = max(1, round(size / 160))
    for blade, colour in zip(
        np.stack([roots, middles, tips], axis=1).tolist(), colours, strict=True
    ):
        draw.line([tuple(p) for p in blade], fill=to_rgb(colour), width=width)
    return image


def _bark(rng: np.random.Generator, size: int) -> Image.Image:
    # Stretched noise: long vertical ridges and fissures.
    noise = fractal(rng, size, [(3, 8), (6, 20), (14, 60), (40, 120)])
    image = colorize(_grainy(noise, rng, 0.06), (50, 44, 38), (150, 140, 124))
    fissures = fractal(rng, size, [(4, 12), (10, 40)]) < 0.3
    image.paste((0, 0, 0), (0, 0, size, size), _to_mask(fissures * 0.45))
    lichen = fractal(rng, size, [(4, 4), (10, 10)])
    moss = np.clip((lichen - 0.62) * 5, 0, 1) * rng.uniform(0.3, 1.0)
    image.paste(colorize(lichen, (70, 110, 40), (150, 170, 110)), (0, 0), _to_mask(moss))
    return image


_BACKGROUNDS: dict[str, Callable[[np.random.Generator, int], Image.Image]] = {
    "forest_floor": _forest_floor,
    "moss": _moss,
    "leaf_litter": _leaf_litter,
    "grass": _grass,
    "bark": _bark,
}
