"""Compositing a drawn layer into a photo: rotate, scale and paste it with a soft shadow."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFilter

from app.services.demo_data.drawing import ellipse
from app.services.demo_data.species import Point


def place(
    photo: Image.Image,
    layer: Image.Image,
    anchor: Point,
    position: Point,
    factor: float,
    angle: float,
    shadow: str | None = None,
) -> None:
    """Rotate `layer` by `angle` degrees about `anchor`, scale it by `factor` and paste it so
    `anchor` lands at `position`, casting a soft shadow first."""
    # Premultiplied alpha, so resampling leaves no dark fringes; a box filter does most of the
    # shrinking, since the affine resample below would alias.
    step = max(1, min(round(1 / factor), layer.width, layer.height))
    layer = layer.convert("RGBa").reduce(step) if step > 1 else layer.convert("RGBa")
    scale = factor * step
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    (ax, ay), (px, py) = (anchor[0] / step, anchor[1] / step), position
    # Output pixel -> source pixel: anchor + rotation((x, y) - position) / scale.
    inverse = (
        c / scale,
        s / scale,
        ax - (c * px + s * py) / scale,
        -s / scale,
        c / scale,
        ay - (-s * px + c * py) / scale,
    )
    placed = layer.transform(
        photo.size, Image.Transform.AFFINE, inverse, Image.Resampling.BILINEAR
    ).convert("RGBA")
    alpha = placed.getchannel("A")
    box = alpha.getbbox()
    if box is None:
        return
    width, height = box[2] - box[0], box[3] - box[1]
    if shadow == "contact":
        _contact_shadow(photo, position, 0.4 * width)
    elif shadow == "drop":
        blur = ImageFilter.GaussianBlur(max(1.0, 0.03 * width))
        offset = (round(0.03 * width), round(0.06 * height))
        photo.paste((8, 6, 4), offset, alpha.point(lambda v: v // 2).filter(blur))
    photo.paste(placed, (0, 0), alpha)


def _contact_shadow(photo: Image.Image, at: Point, radius: float) -> None:
    """A soft dark ellipse where the stem meets the ground."""
    blur = max(1.0, 0.3 * radius)
    half_w, half_h = math.ceil(radius + 3 * blur), math.ceil(0.3 * radius + 3 * blur)
    left, top = round(at[0]) - half_w, round(at[1]) - half_h
    mask = Image.new("L", (2 * half_w, 2 * half_h), 0)
    ellipse(ImageDraw.Draw(mask), at[0] - left, at[1] - top, radius, 0.3 * radius, 150)
    photo.paste((10, 8, 5), (left, top), mask.filter(ImageFilter.GaussianBlur(blur)))
