"""The planted anomalies: fingers, people, micrographs, landscapes (tiny subjects are in photo)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from app.services.demo_data.backgrounds import background_for, colorize, fractal, to_image
from app.services.demo_data.drawing import capsule, ellipse, ellipse_points, polygon_mask, to_rgb
from app.services.demo_data.mushroom import draw_subject, shade_layer
from app.services.demo_data.placement import place
from app.services.demo_data.species import RGB, DemoSpecies, Point
from app.services.demo_data.specimen import Specimen

ANOMALY_KINDS: tuple[str, ...] = ("finger", "person", "microscopy", "scenery", "tiny")


def add_finger(photo: Image.Image, rng: np.random.Generator) -> None:
    """A fingertip poking in from an edge over the subject, close to the lens, out of focus."""
    size = photo.width
    skin = np.asarray(_skin(rng), dtype=np.float64)
    width = rng.uniform(0.26, 0.36) * size
    tip = np.array([rng.uniform(0.38, 0.62), rng.uniform(0.35, 0.55)]) * size
    side = int(rng.integers(3))  # from the bottom, the left or the right edge
    if side == 0:
        base = np.array([rng.uniform(0.2, 0.8), 1.4]) * size
    else:
        base = np.array([-0.4 if side == 1 else 1.4, rng.uniform(0.6, 1.3)]) * size
    axis = (tip - base) / np.linalg.norm(tip - base)
    normal = np.array([-axis[1], axis[0]])
    # Shading across the finger: darker flanks, a bright ridge along the middle.
    tone = Image.new("RGB", photo.size, to_rgb(skin * 0.72))
    draw = ImageDraw.Draw(tone)
    draw.polygon(capsule(base, tip - 0.12 * width * axis, 0.5 * width), fill=to_rgb(skin * 1.06))
    tone = tone.filter(ImageFilter.GaussianBlur(0.16 * width))
    draw = ImageDraw.Draw(tone)
    for back in (1.0, 1.9):  # knuckle creases
        centre = tip - back * width * axis
        ends = [tuple(centre - 0.32 * width * normal), tuple(centre + 0.32 * width * normal)]
        draw.line(ends, fill=to_rgb(skin * 0.66), width=max(1, round(0.035 * width)))
    if rng.random() < 0.7:  # the nail side faces the camera
        nail = capsule(tip - 0.62 * width * axis, tip - 0.12 * width * axis, 0.56 * width)
        draw.polygon(nail, fill=to_rgb(skin * (1.1, 1.0, 1.02) + 12), outline=to_rgb(skin * 0.75))
    defocus = ImageFilter.GaussianBlur(rng.uniform(0.008, 0.02) * size)
    alpha = polygon_mask(photo.size, capsule(base, tip, width)).filter(defocus)
    photo.paste(tone.filter(defocus), (0, 0), alpha)


def _skin(rng: np.random.Generator) -> RGB:
    tones = np.array([(236, 188, 160), (224, 172, 138), (198, 134, 106), (141, 85, 60)])
    return to_rgb(tones[rng.integers(len(tones))] * rng.uniform(0.93, 1.07))


def person_photo(
    species: DemoSpecies, specimen: Specimen, rng: np.random.Generator, size: int
) -> Image.Image:
    """Someone posing in the woods, sometimes with the find small at their feet."""
    photo = background_for(specimen, rng, size) if rng.random() < 0.6 else scenery(rng, size)
    if rng.random() < 0.4:
        layer, anchor = draw_subject(species, specimen, size)
        spot = (rng.uniform(0.15, 0.85) * size, 0.95 * size)
        place(photo, layer, anchor, spot, 0.5 * rng.uniform(0.15, 0.25), 0.0, "contact")
    layer, anchor, reach = _draw_person(rng, size)
    # Full length, or waist up with head and shoulders filling the frame.
    factor = rng.uniform(0.45, 0.52) if rng.random() < 0.5 else rng.uniform(0.9, 1.1)
    head_top = rng.uniform(0.03, 0.1) * size
    position = (rng.uniform(0.38, 0.62) * size, head_top + reach * factor)
    place(photo, layer, anchor, position, factor, rng.normal(0, 4))
    return photo


def _draw_person(rng: np.random.Generator, size: int) -> tuple[Image.Image, Point, float]:
    """A standing figure on a canvas twice the photo size. Returns the canvas, the anchor
    between the feet, and the anchor's distance below the top of the head."""
    canvas = 2 * size
    height = 0.9 * canvas
    cx, top = canvas / 2, 0.05 * canvas
    clothes = np.array(
        [(200, 40, 40), (40, 80, 170), (40, 120, 60), (230, 180, 40), (220, 110, 30)]
    )
    jacket = to_rgb(clothes[rng.integers(len(clothes))] * rng.uniform(0.8, 1.1))
    trousers = to_rgb(np.array((50, 52, 64)) * rng.uniform(0.7, 1.5))
    skin = _skin(rng)
    layer = Image.new("RGBA", (canvas, canvas), (*jacket, 0))
    draw = ImageDraw.Draw(layer)

    def at(dx: float, dy: float) -> np.ndarray:
        return np.array([cx + dx * height, top + dy * height])

    for side in (-1, 1):
        draw.polygon(
            capsule(at(0.05 * side, 0.5), at(0.07 * side, 0.95), 0.085 * height),
            fill=(*trousers, 255),
        )
        foot = at(0.08 * side, 0.97)
        ellipse(draw, foot[0], foot[1], 0.05 * height, 0.025 * height, (40, 30, 24, 255))
    torso = [at(-0.13, 0.16), at(0.13, 0.16), at(0.11, 0.52), at(-0.11, 0.52)]
    draw.polygon([tuple(p) for p in torso], fill=(*jacket, 255))
    draw.line(
        [tuple(at(0, 0.17)), tuple(at(0, 0.52))],
        fill=(*to_rgb(np.asarray(jacket) * 0.6), 255),
        width=max(1, round(0.006 * height)),
    )
    sleeve = (*to_rgb(np.asarray(jacket) * 0.9), 255)
    for side in (-1, 1):
        shoulder, elbow = at(0.125 * side, 0.18), at(0.17 * side, 0.34)
        hand = at((0.15 + rng.uniform(-0.03, 0.05)) * side, rng.uniform(0.44, 0.5))
        draw.polygon(capsule(shoulder, elbow, 0.07 * height), fill=sleeve)
        draw.polygon(capsule(elbow, hand, 0.065 * height), fill=sleeve)
        ellipse(draw, hand[0], hand[1], 0.035 * height, 0.035 * height, (*skin, 255))
    if rng.random() < 0.5:  # a forager's basket
        hand = at(0.17, 0.5)
        ellipse(
            draw,
            hand[0],
            hand[1] + 0.06 * height,
            0.09 * height,
            0.06 * height,
            (150, 105, 55, 255),
        )
    neck = at(0, 0.14)
    ellipse(draw, neck[0], neck[1], 0.035 * height, 0.03 * height, (*skin, 255))
    hair = to_rgb(np.array((60, 40, 25)) * rng.uniform(0.4, 2.0))
    _draw_head(draw, at(0, 0.075), 0.065 * height, skin, hair)
    shade_layer(layer, -2.0)
    return layer, (cx, top + 0.97 * height), 0.96 * height


def _draw_head(
    draw: ImageDraw.ImageDraw, centre: np.ndarray, r: float, skin: RGB, hair: RGB
) -> None:
    """A face: hair on top, two eyes and a smile, so the figure reads as a person."""
    x, y = float(centre[0]), float(centre[1])
    ellipse(draw, x, y, 0.85 * r, r, (*skin, 255))
    draw.chord([x - 0.9 * r, y - 1.08 * r, x + 0.9 * r, y + 0.5 * r], 180, 360, fill=(*hair, 255))
    for side in (-1, 1):
        ellipse(draw, x + 0.33 * r * side, y + 0.1 * r, 0.08 * r, 0.08 * r, (30, 25, 20, 255))
    mouth = [x - 0.3 * r, y + 0.2 * r, x + 0.3 * r, y + 0.6 * r]
    draw.arc(mouth, 20, 160, fill=(120, 60, 50, 255), width=max(1, round(0.05 * r)))


def microscopy(rng: np.random.Generator, size: int) -> Image.Image:
    """A micrograph through the eyepiece: bright round field, stained spores and hyphae."""
    canvas = 2 * size
    stains = {
        "congo red": ((246, 232, 232), (196, 56, 86)),
        "cotton blue": ((232, 238, 246), (70, 82, 172)),
        "melzer": ((246, 240, 216), (150, 100, 40)),
        "brightfield": ((238, 238, 232), (110, 112, 100)),
    }
    field_rgb, stain = list(stains.values())[int(rng.integers(len(stains)))]
    image = Image.new("RGB", (canvas, canvas), (14, 14, 16))
    draw = ImageDraw.Draw(image)
    centre = canvas / 2 + rng.normal(0, 0.03 * canvas, 2)
    radius = rng.uniform(0.42, 0.56) * canvas
    ellipse(draw, centre[0], centre[1], radius, radius, field_rgb)
    fill = to_rgb(0.45 * np.asarray(stain) + 0.55 * np.asarray(field_rgb))
    outline = to_rgb(np.asarray(stain) * 0.8)
    for _ in range(int(rng.integers(2, 5))):
        _hypha(draw, rng, centre, radius, fill, outline)
    spore = rng.uniform(0.018, 0.03) * canvas
    for _ in range(int(rng.integers(25, 70))):
        r, angle = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        x, y = centre[0] + r * math.cos(angle), centre[1] + r * math.sin(angle)
        rx = spore * rng.uniform(0.85, 1.15)
        points = ellipse_points(x, y, rx, rx * rng.uniform(0.55, 0.8), angle=rng.uniform(0, np.pi))
        draw.polygon(points, fill=fill, outline=outline, width=max(1, round(0.12 * rx)))
        ellipse(draw, x + 0.2 * rx, y - 0.1 * rx, 0.25 * rx, 0.25 * rx, field_rgb)  # oil drop
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    return _vignette(image, centre / 2, radius / 2)


def _hypha(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    centre: np.ndarray,
    radius: float,
    fill: RGB,
    outline: RGB,
) -> None:
    x, y = centre + rng.uniform(-0.6, 0.6, 2) * radius
    angle = rng.uniform(0, 2 * np.pi)
    width = rng.uniform(0.012, 0.02) * radius * 2
    points = [(x, y)]
    for _ in range(8):
        angle += rng.normal(0, 0.25)
        x, y = x + 0.12 * radius * math.cos(angle), y + 0.12 * radius * math.sin(angle)
        points.append((x, y))
    draw.line(points, fill=outline, width=round(width * 1.4), joint="curve")
    draw.line(points, fill=fill, width=max(1, round(width)), joint="curve")
    for (x0, y0), (x1, y1) in zip(points[1::2], points[2::2], strict=False):  # septa: cross-walls
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = -(y1 - y0) / length * 0.7 * width, (x1 - x0) / length * 0.7 * width
        draw.line(
            [(x0 - nx, y0 - ny), (x0 + nx, y0 + ny)], fill=outline, width=max(1, round(width / 5))
        )


def _vignette(image: Image.Image, centre: np.ndarray, radius: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    ys, xs = np.ogrid[: image.height, : image.width]
    distance = np.hypot(xs - centre[0], ys - centre[1]) / radius
    falloff = np.clip(1 - 0.45 * distance**3, 0.0, 1.0)
    return to_image(pixels * falloff[..., None])


def scenery(rng: np.random.Generator, size: int) -> Image.Image:
    """A landscape: sky, hills, a line of conifers, meadow or lake. No mushroom."""
    horizon = rng.uniform(0.45, 0.65) * size
    zenith = np.array((70, 120, 200)) * rng.uniform(0.85, 1.1)
    haze = np.array((250, 190, 140)) if rng.random() < 0.25 else np.array((196, 214, 236))
    t = np.clip(np.arange(size, dtype=np.float32) / horizon, 0, 1)[:, None, None]
    pixels = np.broadcast_to(zenith + (haze - zenith) * t, (size, size, 3)).copy()
    image = to_image(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):  # clouds
        x, y = rng.uniform(0, size), rng.uniform(0.05, 0.6) * horizon
        ellipse(
            draw,
            x,
            y,
            rng.uniform(0.08, 0.2) * size,
            rng.uniform(0.02, 0.05) * size,
            (245, 246, 250),
        )
    image = image.filter(ImageFilter.GaussianBlur(size / 80))
    draw = ImageDraw.Draw(image)
    xs = np.linspace(0, size, 33)
    for height, tone in ((0.18, (126, 144, 166)), (0.08, (74, 108, 62))):  # far, near hills
        profile = horizon - height * size * (0.5 + 0.5 * _ridge(rng, len(xs)))
        draw.polygon([(0, size), *zip(xs, profile, strict=True), (size, size)], fill=tone)
    for x in np.sort(rng.uniform(0, size, int(rng.integers(15, 35)))):  # conifers on the horizon
        h, w = rng.uniform(0.06, 0.16) * size, rng.uniform(0.02, 0.04) * size
        tone = to_rgb(np.array((30, 62, 36)) * rng.uniform(0.7, 1.2))
        draw.polygon([(x - w, horizon + 2), (x + w, horizon + 2), (x, horizon - h)], fill=tone)
    ground = fractal(rng, size, [(4, 4), (16, 16)])[int(horizon) :]
    if rng.random() < 0.3:
        low = colorize(ground, (60, 96, 150), (120, 160, 200))  # a lake
    else:
        low = colorize(ground, (70, 110, 40), (160, 170, 80))  # a meadow
    image.paste(low, (0, int(horizon)))
    return image


def _ridge(rng: np.random.Generator, n: int) -> np.ndarray:
    """A smooth random profile in [-1, 1]."""
    coarse = rng.uniform(-1, 1, 6)
    fine = np.interp(np.linspace(0, 5, n), np.arange(6), coarse)
    return np.clip(fine + rng.normal(0, 0.08, n), -1, 1)
