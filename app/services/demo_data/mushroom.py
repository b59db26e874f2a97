"""The mushroom itself: geometry, caps, stems, surface textures, brackets and shading."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from app.services.demo_data.drawing import (
    clip_paste,
    ellipse,
    ellipse_mask,
    ellipse_points,
    polygon_mask,
    sample_in,
    to_rgb,
)
from app.services.demo_data.species import RGB, DemoSpecies, Point
from app.services.demo_data.specimen import Specimen


@dataclass(frozen=True)
class _Geometry:
    """Where a mushroom's parts sit on the subject canvas (pixels, y down)."""

    cx: float  # stem base
    base_y: float
    top_x: float  # stem top, the cap's centre line
    rim_y: float  # the cap's lower edge
    rw: float  # cap half-width
    ch: float  # cap height
    sw: float  # stem half-width
    unit: float  # one cap-radius unit, for line widths and texture sizes


def draw_subject(species: DemoSpecies, specimen: Specimen, size: int) -> tuple[Image.Image, Point]:
    """Draw the specimen on a transparent canvas, larger than it will appear so that shrinking
    it antialiases the edges; returns the canvas and its anchor: the stem's foot, or the middle
    of a bracket cluster. Framing in the photo is decided later, by `place`."""
    # The tallest species (shaggy ink cap) stands about 3 units above its foot: that fits.
    unit = 0.42 * size
    canvas = round(1.6 * size)
    layer = Image.new("RGBA", (canvas, canvas), (*specimen.stem_rgb, 0))
    rng = np.random.default_rng(specimen.detail_seed)
    if species.cap_shape == "shelf":
        anchor = (canvas / 2, canvas / 2)
        _draw_brackets(layer, species, specimen, anchor, unit, rng)
    else:
        anchor = (canvas / 2, 0.9 * canvas)
        geometry = _Geometry(
            cx=anchor[0],
            base_y=anchor[1],
            top_x=anchor[0] + specimen.bend * unit,
            rim_y=anchor[1] - species.stem_height * unit,
            rw=species.cap_width * unit,
            ch=species.cap_height * unit,
            sw=species.stem_width * unit / 2,
            unit=unit,
        )
        _draw_mushroom(layer, species, specimen, geometry, rng)
    shade_layer(layer, specimen.light)
    return layer, anchor


def _draw_mushroom(
    layer: Image.Image,
    species: DemoSpecies,
    specimen: Specimen,
    g: _Geometry,
    rng: np.random.Generator,
) -> None:
    # Back to front: the underside peeks below the rim, the stem hides its middle.
    if species.cap_shape in ("convex", "flat"):
        _draw_underside(layer, species, specimen, g, rng)
    _draw_stem(layer, species, specimen, g, rng)
    if species.cap_shape == "funnel":
        cap_mask = _draw_funnel(layer, specimen, g, rng)
    else:
        outline = _cap_outline(species.cap_shape, g)
        ImageDraw.Draw(layer).polygon(outline, fill=(*specimen.cap_rgb, 255))
        cap_mask = polygon_mask(layer.size, outline)
    _draw_texture(layer, cap_mask, species, specimen, g, rng)
    _draw_highlight(layer, cap_mask, 120 if species.texture == "smooth" else 60)  # boletes shine


def _cap_outline(shape: str, g: _Geometry) -> list[Point]:
    x, y, rw, ch = g.top_x, g.rim_y, g.rw, g.ch
    if shape in ("convex", "flat"):
        a = np.linspace(0, np.pi, 41)
        lift = np.sin(a) ** (0.7 if shape == "convex" else 0.45)
        if shape == "flat":  # a low umbo in the middle
            lift = lift + 0.25 * np.exp(-(((a - np.pi / 2) / 0.25) ** 2))
        top = list(zip(x + rw * np.cos(a), y - ch * lift, strict=True))
        # The rim curves towards the viewer: we look at the cap from slightly below.
        b = np.linspace(np.pi, 2 * np.pi, 21)[1:-1]
        rim = list(zip(x + rw * np.cos(b), y - 0.06 * rw * np.sin(b), strict=True))
        return top + rim
    if shape == "bell":  # near-vertical sides, rounded top, a slight flare at the rim
        return _spire(x, y, rw, ch, power=4.0, roundness=0.35, flare=0.1)
    return _spire(x, y, rw, ch, power=1.3, roundness=0.75, flare=0.0)  # conical


def _spire(
    x: float, y: float, rw: float, ch: float, *, power: float, roundness: float, flare: float
) -> list[Point]:
    """A tall cap: half-width rw * (1 - s**power)**roundness at height s in [0, 1]."""
    s = np.linspace(0, 1, 31)
    half = rw * (1 - s**power) ** roundness * (1 + flare * (1 - s) ** 6)
    ys = y - ch * s
    right = list(zip(x + half, ys, strict=True))
    left = list(zip(x - half, ys, strict=True))[::-1]
    return right + left[1:]


def _draw_underside(
    layer: Image.Image,
    species: DemoSpecies,
    specimen: Specimen,
    g: _Geometry,
    rng: np.random.Generator,
) -> None:
    """Gills (lines radiating from the stem) or pores (stipple) seen under the rim."""
    ry = (0.2 if species.cap_shape == "flat" else 0.16) * g.rw
    draw = ImageDraw.Draw(layer)
    ellipse(draw, g.top_x, g.rim_y, 0.97 * g.rw, ry, (*specimen.gill_rgb, 255))
    shade = to_rgb(np.asarray(specimen.gill_rgb) * 0.78)
    if species.texture == "smooth":  # boletes have pores, not gills
        for px, py in sample_in(ellipse_mask(layer.size, g.top_x, g.rim_y, g.rw, ry), 90, rng):
            ellipse(draw, px, py, 0.012 * g.unit, 0.008 * g.unit, (*shade, 255))
        return
    width = max(1, round(0.012 * g.unit))
    for a in np.linspace(0.03, np.pi - 0.03, 44):
        end = (g.top_x + 0.95 * g.rw * math.cos(a), g.rim_y + 0.95 * ry * math.sin(a))
        draw.line([(g.top_x, g.rim_y), end], fill=(*shade, 255), width=width)


def _stem_axis(style: str, g: _Geometry, n: int = 17) -> tuple[np.ndarray, ...]:
    """Centre line and half-width of the stem, from base (t=0) to top (t=1)."""
    t = np.linspace(0, 1, n)
    xs = g.cx + (g.top_x - g.cx) * t**1.5
    ys = g.base_y + (g.rim_y - g.base_y) * t
    if style == "bulb":
        profile = 1 + 0.9 * np.exp(-((t / 0.14) ** 2))
    elif style == "club":
        profile = 1.35 - 0.45 * t
    elif style == "taper":
        profile = 0.75 + 0.55 * t**2
    else:
        profile = 1 + 0.2 * (1 - t)
    return t, xs, ys, g.sw * profile


def _draw_stem(
    layer: Image.Image,
    species: DemoSpecies,
    specimen: Specimen,
    g: _Geometry,
    rng: np.random.Generator,
) -> None:
    style = species.stem_style
    t, xs, ys, half = _stem_axis(style, g)
    if species.cap_shape in ("conical", "bell"):
        ys = ys - 0.1 * g.ch * t  # tuck the top into the cap
    outline = [
        *zip(xs - half, ys, strict=True),
        *list(zip(xs + half, ys, strict=True))[::-1],
        (g.cx, g.base_y + 0.3 * half[0]),  # rounded foot
    ]
    ImageDraw.Draw(layer).polygon(outline, fill=(*specimen.stem_rgb, 255))
    texture = Image.new("RGBA", layer.size, (*specimen.stem_rgb, 0))
    draw = ImageDraw.Draw(texture)
    _stem_fibres(draw, xs, ys, half, specimen.stem_rgb, g.unit, rng)
    if style == "club":
        _stem_net(draw, xs, ys, half, specimen.stem_rgb, g.unit)
    elif style == "snakeskin":
        _stem_bands(draw, xs, ys, half, specimen.texture_rgb, g.unit, rng)
    elif style == "bulb":
        _stem_volva(draw, xs, ys, half, specimen.texture_rgb, g.unit)
    clip_paste(layer, texture, polygon_mask(layer.size, outline))
    if style in ("bulb", "snakeskin"):
        _stem_ring(ImageDraw.Draw(layer), xs, ys, half, specimen.stem_rgb, style, g.unit)


def _stem_fibres(
    draw: ImageDraw.ImageDraw,
    xs: np.ndarray,
    ys: np.ndarray,
    half: np.ndarray,
    rgb: RGB,
    unit: float,
    rng: np.random.Generator,
) -> None:
    width = max(1, round(0.01 * unit))
    for offset in rng.uniform(-0.8, 0.8, 6):
        tone = to_rgb(np.asarray(rgb) * rng.uniform(0.82, 1.1))
        draw.line(list(zip(xs + offset * half, ys, strict=True)), fill=(*tone, 90), width=width)


def _stem_net(
    draw: ImageDraw.ImageDraw,
    xs: np.ndarray,
    ys: np.ndarray,
    half: np.ndarray,
    rgb: RGB,
    unit: float,
) -> None:
    """A bolete's raised net, on the upper stem."""
    tone = (*to_rgb(np.asarray(rgb) * 0.8), 200)
    width = max(1, round(0.012 * unit))
    x0, x1 = float(xs.min() - half.max()), float(xs.max() + half.max())
    step = 0.09 * unit
    for y in np.arange(float(ys[-1]), float(ys[len(ys) // 3]), step):
        draw.line([(x0, y), (x1, y + 0.6 * (x1 - x0))], fill=tone, width=width)
        draw.line([(x0, y + 0.6 * (x1 - x0)), (x1, y)], fill=tone, width=width)


def _stem_bands(
    draw: ImageDraw.ImageDraw,
    xs: np.ndarray,
    ys: np.ndarray,
    half: np.ndarray,
    rgb: RGB,
    unit: float,
    rng: np.random.Generator,
) -> None:
    """A parasol's snakeskin: brown zigzag bands across the stem."""
    width = max(1, round(0.03 * unit))
    for i in range(1, len(ys) - 4, 2):
        zig = [
            (xs[i] + f * half[i] * 1.2, ys[i] + (0.03 * unit if k % 2 else 0))
            for k, f in enumerate(np.linspace(-1, 1, 7))
        ]
        draw.line(zig, fill=(*rgb, int(rng.integers(150, 230))), width=width)


def _stem_volva(
    draw: ImageDraw.ImageDraw,
    xs: np.ndarray,
    ys: np.ndarray,
    half: np.ndarray,
    rgb: RGB,
    unit: float,
) -> None:
    """Fly agaric: rings of white warts around the bulb."""
    tone = (*to_rgb(np.asarray(rgb) * 0.9), 255)
    width = max(1, round(0.03 * unit))
    for i in (1, 2, 3):
        arc = [
            (xs[i] + half[i] * math.cos(a), ys[i] + 0.15 * half[i] * math.sin(a))
            for a in np.linspace(0.15, np.pi - 0.15, 9)
        ]
        draw.line(arc, fill=tone, width=width)


def _stem_ring(
    draw: ImageDraw.ImageDraw,
    xs: np.ndarray,
    ys: np.ndarray,
    half: np.ndarray,
    rgb: RGB,
    style: str,
    unit: float,
) -> None:
    """The skirt an Amanita or a parasol keeps from its veil."""
    i = len(ys) - 4 if style == "bulb" else len(ys) - 3
    x, y, h = float(xs[i]), float(ys[i]), float(half[i])
    drop = 0.22 * unit if style == "bulb" else 0.08 * unit
    skirt = [(x - h, y), (x + h, y), (x + 1.9 * h, y + drop), (x - 1.9 * h, y + drop)]
    draw.polygon(skirt, fill=(*to_rgb(np.asarray(rgb) * 1.03), 255))
    edge = (*to_rgb(np.asarray(rgb) * 0.78), 255)
    draw.line([skirt[3], skirt[2]], fill=edge, width=max(1, round(0.02 * unit)))


def _draw_funnel(
    layer: Image.Image, specimen: Specimen, g: _Geometry, rng: np.random.Generator
) -> Image.Image:
    """A chanterelle: a trumpet with forking ridges outside and a wavy, dished top.
    Returns the mask of the top surface."""
    x, y, rw = g.top_x, g.rim_y, g.rw
    top, ry = y - g.ch, 0.28 * rw
    s = np.linspace(0, 1, 17)
    half = 1.3 * g.sw + (rw - 1.3 * g.sw) * s**1.8
    ys = y - g.ch * s
    a = np.linspace(0, np.pi, 41)
    wave = 1 + 0.05 * np.sin(a * int(rng.integers(5, 9)) + rng.uniform(0, 6.3))
    lip = list(zip(x + rw * np.cos(a) * wave, top + ry * np.sin(a) * wave, strict=True))
    body = [
        *zip(x + half, ys, strict=True),
        *lip,
        *list(zip(x - half, ys, strict=True))[::-1],
    ]
    draw = ImageDraw.Draw(layer)
    draw.polygon(body, fill=(*specimen.gill_rgb, 255))
    ridges = Image.new("RGBA", layer.size, (*specimen.gill_rgb, 0))
    ridge_draw = ImageDraw.Draw(ridges)
    tone = (*to_rgb(np.asarray(specimen.gill_rgb) * 0.8), 255)
    width = max(1, round(0.015 * g.unit))
    for angle in np.linspace(0.12, np.pi - 0.12, 15):
        start = (x + 1.2 * g.sw * math.cos(angle), y)
        end = (x + rw * math.cos(angle), top + ry * math.sin(angle))
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ridge_draw.line([start, end], fill=tone, width=width)
        fork = (end[0] + 0.08 * rw, end[1])  # ridges fork towards the margin
        ridge_draw.line([middle, fork], fill=tone, width=width)
    clip_paste(layer, ridges, polygon_mask(layer.size, body))
    inner = [(x + rw * math.cos(b) * 0.97, top + ry * math.sin(b) * 0.97) for b in a]
    inner += [(px, 2 * top - py) for px, py in reversed(inner)]  # mirror: the far half
    draw.polygon(inner, fill=(*specimen.cap_rgb, 255))
    ellipse(
        draw,
        x,
        top - 0.1 * ry,
        0.35 * rw,
        0.3 * ry,
        (*to_rgb(np.asarray(specimen.cap_rgb) * 0.85), 255),
    )
    return polygon_mask(layer.size, inner)


def _draw_texture(
    layer: Image.Image,
    cap_mask: Image.Image,
    species: DemoSpecies,
    specimen: Specimen,
    g: _Geometry,
    rng: np.random.Generator,
) -> None:
    texture = Image.new("RGBA", layer.size, (*specimen.texture_rgb, 0))
    draw = ImageDraw.Draw(texture)
    kind, rgb = species.texture, specimen.texture_rgb
    if kind == "warts":
        _warts(draw, cap_mask, rgb, specimen.cap_rgb, g, rng)
    elif kind == "scales":
        _scales(draw, cap_mask, rgb, g, rng)
    elif kind == "pits":
        _pits(draw, rgb, g, rng)
    elif kind == "gills":
        _striations(draw, rgb, g)
    clip_paste(layer, texture, cap_mask)


def _warts(
    draw: ImageDraw.ImageDraw,
    mask: Image.Image,
    rgb: RGB,
    cap_rgb: RGB,
    g: _Geometry,
    rng: np.random.Generator,
) -> None:
    """Fly agaric: white veil remnants, smaller towards the rim, each with a shadowed side."""
    dark = (*to_rgb(np.asarray(cap_rgb) * 0.6), 255)
    for px, py in sample_in(mask, 34, rng):
        depth = 0.5 + 0.5 * min(1.0, (g.rim_y - py) / max(g.ch, 1.0))
        r = g.unit * rng.uniform(0.035, 0.075) * depth
        ellipse(draw, px, py + 0.25 * r, r, 0.7 * r, dark)
        ellipse(draw, px, py, r, 0.7 * r, (*rgb, 255))


def _scales(
    draw: ImageDraw.ImageDraw, mask: Image.Image, rgb: RGB, g: _Geometry, rng: np.random.Generator
) -> None:
    """Shaggy ink cap, parasol: a dark crown and recurved scales pointing down."""
    box = mask.getbbox() or (0, 0, 1, 1)
    crown_y = box[1] + 0.08 * (box[3] - box[1])
    ellipse(draw, g.top_x, crown_y, 0.32 * g.rw, max(0.06 * g.unit, 0.06 * g.ch), (*rgb, 255))
    for px, py in sample_in(mask, 70, rng):
        s = g.unit * rng.uniform(0.025, 0.05)
        tone = (*to_rgb(np.asarray(rgb) * rng.uniform(0.8, 1.15)), int(rng.integers(170, 255)))
        draw.polygon(
            [(px - s, py - 0.5 * s), (px + s, py - 0.5 * s), (px, py + 0.9 * s)], fill=tone
        )


def _pits(draw: ImageDraw.ImageDraw, rgb: RGB, g: _Geometry, rng: np.random.Generator) -> None:
    """A morel's honeycomb: dark pits between pale ridges, in rows up the cone."""
    rows = 7
    cell_h = g.ch / rows
    for row in range(rows):
        s = (row + 0.5) / rows
        y = g.rim_y - g.ch * s
        half = g.rw * (1 - s**1.3) ** 0.75
        cols = max(1, round(2 * half / (0.8 * cell_h)))
        cell_w = 2 * half / cols
        for col in range(cols):
            px = g.top_x - half + cell_w * (col + 0.5 + rng.uniform(-0.15, 0.15) + row % 2 * 0.3)
            tone = (*to_rgb(np.asarray(rgb) * rng.uniform(0.75, 1.2)), 255)
            pit = ellipse_points(
                px, y + rng.uniform(-0.1, 0.1) * cell_h, 0.36 * cell_w, 0.4 * cell_h,
                angle=rng.uniform(-0.3, 0.3), wobble=rng.uniform(0.8, 1.15, 10),
            )  # fmt: skip
            draw.polygon(pit, fill=tone)


def _striations(draw: ImageDraw.ImageDraw, rgb: RGB, g: _Geometry) -> None:
    """Translucent gill lines showing through a thin cap margin."""
    width = max(1, round(0.008 * g.unit))
    for a in np.linspace(0.1, np.pi - 0.1, 26):
        start = (g.top_x + 0.55 * g.rw * math.cos(a), g.rim_y - 0.55 * g.ch * math.sin(a))
        end = (g.top_x + g.rw * math.cos(a), g.rim_y - 0.05 * g.ch * math.sin(a))
        draw.line([start, end], fill=(*rgb, 110), width=width)


def _draw_highlight(layer: Image.Image, mask: Image.Image, strength: int) -> None:
    """A soft sheen on the upper-left of the cap, so it reads as a rounded surface."""
    box = mask.getbbox()
    if box is None:
        return
    w, h = box[2] - box[0], box[3] - box[1]
    glow = Image.new("RGBA", (w, h), (255, 250, 240, 0))
    ellipse(ImageDraw.Draw(glow), 0.35 * w, 0.3 * h, 0.2 * w, 0.15 * h, (255, 250, 240, strength))
    glow = glow.filter(ImageFilter.GaussianBlur(max(1.0, 0.1 * min(w, h))))
    coverage = ImageChops.multiply(glow.getchannel("A"), mask.crop(box))
    layer.paste(glow.convert("RGB"), box[:2], coverage)


def _draw_brackets(
    layer: Image.Image,
    species: DemoSpecies,
    specimen: Specimen,
    anchor: Point,
    unit: float,
    rng: np.random.Generator,
) -> None:
    """Hoof fungus: one to three banded brackets stacked on a trunk."""
    n = specimen.count
    for k in range(n):
        w = unit * species.cap_width * (1 - 0.2 * k) * rng.uniform(0.9, 1.1)
        h = unit * species.cap_height * (1 - 0.2 * k) * rng.uniform(0.9, 1.1)
        x = anchor[0] + rng.normal(0, 0.25) * unit
        y = anchor[1] + (k - (n - 1) / 2) * 1.2 * unit * species.cap_height
        _draw_bracket(layer, specimen, x, y, w, h, rng)


def _draw_bracket(
    layer: Image.Image,
    specimen: Specimen,
    x: float,
    y: float,
    w: float,
    h: float,
    rng: np.random.Generator,
) -> None:
    draw = ImageDraw.Draw(layer)
    ellipse(draw, x, y + 0.9 * h, 0.85 * w, 0.2 * h, (*specimen.gill_rgb, 255))  # pore surface
    t = np.linspace(0, 1, 21)
    attachment = list(zip(x - w + 2 * w * t, y - 0.12 * h * np.sin(np.pi * t), strict=True))
    a = np.linspace(0, np.pi, 41)
    outline = attachment + list(zip(x + w * np.cos(a), y + h * np.sin(a), strict=True))[1:-1]
    draw.polygon(outline, fill=(*specimen.cap_rgb, 255))
    bands = Image.new("RGBA", layer.size, (*specimen.texture_rgb, 0))
    band_draw = ImageDraw.Draw(bands)
    width = max(1, round(0.06 * h))
    # Growth zones: nested arcs that meet at the trunk and follow the margin.
    for i, f in enumerate(np.linspace(0.2, 0.9, int(rng.integers(5, 8)))):
        arc = [(x + w * (1 - 0.3 * (1 - f)) * math.cos(b), y + h * f * math.sin(b)) for b in a]
        tone = specimen.texture_rgb if i % 2 else to_rgb(np.asarray(specimen.cap_rgb) * 1.12)
        band_draw.line(arc, fill=(*tone, 230), width=width)
    margin = [(x + w * math.cos(b), y + h * math.sin(b)) for b in a]
    band_draw.line(margin, fill=(*specimen.gill_rgb, 255), width=2 * width)
    clip_paste(layer, bands, polygon_mask(layer.size, outline))


def shade_layer(layer: Image.Image, light: float) -> None:
    """Light from one side and darker silhouette edges, so flat fills read as solid forms."""
    radius = 0.015 * layer.width
    box = _padded_box(layer.getchannel("A"), 3 * radius)
    if box is None:
        return
    part = layer.crop(box)
    pixels = np.array(part)
    soft = part.getchannel("A").filter(ImageFilter.GaussianBlur(radius))
    rim = np.asarray(soft, dtype=np.float32) * np.float32(0.28 / 255) + np.float32(0.72)
    extent = max(part.width, part.height) / 2
    xs = (np.arange(part.width, dtype=np.float32) - part.width / 2) * (math.cos(light) / extent)
    ys = (np.arange(part.height, dtype=np.float32) - part.height / 2) * (math.sin(light) / extent)
    shade = np.clip(1 + 0.22 * (xs[None, :] + ys[:, None]), 0.7, 1.25) * rim
    lit = pixels[..., :3] * shade[..., None]
    pixels[..., :3] = np.minimum(lit, 255).astype(np.uint8)
    layer.paste(Image.fromarray(pixels, "RGBA"), box[:2])


def _padded_box(mask: Image.Image, pad: float) -> tuple[int, int, int, int] | None:
    """The mask's bounding box grown by `pad` pixels, clipped to the image."""
    box = mask.getbbox()
    if box is None:
        return None
    p = math.ceil(pad)
    return (
        max(0, box[0] - p),
        max(0, box[1] - p),
        min(mask.width, box[2] + p),
        min(mask.height, box[3] + p),
    )
