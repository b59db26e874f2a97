"""One photo: the specimen in its scene, framed and placed, then camera and JPEG artefacts."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from app.services.demo_data.anomalies import add_finger, microscopy, person_photo, scenery
from app.services.demo_data.backgrounds import background_for
from app.services.demo_data.drawing import scaled_tones
from app.services.demo_data.mushroom import draw_subject
from app.services.demo_data.placement import place
from app.services.demo_data.plan import SALT_IMAGE, SALT_OBSERVATION, Job
from app.services.demo_data.species import DemoSpecies, Point
from app.services.demo_data.specimen import Specimen, make_specimen


def render(job: Job, species: DemoSpecies, size: int, seed: int) -> bytes:
    specimen = make_specimen(
        species,
        np.random.default_rng([seed, job.species_index, job.observation_index, SALT_OBSERVATION]),
    )
    rng = np.random.default_rng([seed, job.species_index, job.image_index, SALT_IMAGE])
    if job.anomaly == "microscopy":
        photo = microscopy(rng, size)
    elif job.anomaly == "scenery":
        photo = scenery(rng, size)
    elif job.anomaly == "person":
        photo = person_photo(species, specimen, rng, size)
    else:
        photo = _mushroom_photo(species, specimen, rng, size, tiny=job.anomaly == "tiny")
        if job.anomaly == "finger":
            add_finger(photo, rng)
    return _finish(photo, rng, specimen.exposure)


def _mushroom_photo(
    species: DemoSpecies,
    specimen: Specimen,
    rng: np.random.Generator,
    size: int,
    *,
    tiny: bool = False,
) -> Image.Image:
    photo = background_for(specimen, rng, size)
    layer, anchor = draw_subject(species, specimen, size)
    box = layer.getbbox() or (0, 0, layer.width, layer.height)
    extent = max(box[2] - box[0], box[3] - box[1])  # photographers fill the frame with the find
    if tiny:  # a speck in a wide shot: still the species, but useless for training
        factor = rng.uniform(0.06, 0.1) * size / extent
        position = (rng.uniform(0.2, 0.8) * size, rng.uniform(0.3, 0.85) * size)
    else:
        factor = specimen.fill * rng.uniform(0.94, 1.06) * size / extent
        x = (specimen.x + rng.normal(0, 0.02)) * size
        y = (specimen.y + rng.normal(0, 0.015)) * size
        # Nudge the subject back into the frame where a wide cap or a lean would cut it off.
        left, right = x - (anchor[0] - box[0]) * factor, x + (box[2] - anchor[0]) * factor
        x += max(0.0, 0.02 * size - left) - max(0.0, right - 0.98 * size)
        y += max(0.0, 0.02 * size - (y - (anchor[1] - box[1]) * factor))
        position = (x, y)
    angle = specimen.tilt + rng.normal(0, 3)
    shadow = "drop" if species.on_wood else "contact"
    place(photo, layer, anchor, position, factor, angle, shadow)
    if not species.on_wood and not tiny:
        _ground_clutter(photo, position, 0.12 * size, specimen.background, rng)
    return photo


def _ground_clutter(
    photo: Image.Image, foot: Point, reach: float, background: str, rng: np.random.Generator
) -> None:
    """Blades, needles or moss in front of the stem's foot, so it grows from the ground
    instead of standing on it."""
    draw = ImageDraw.Draw(photo)
    size = photo.width
    n = int(rng.integers(8, 16))
    roots = np.stack(
        [foot[0] + rng.uniform(-reach, reach, n), foot[1] + rng.uniform(-0.01, 0.03, n) * size],
        axis=1,
    )
    if background == "grass":
        base, length, spread = (90, 150, 50), rng.uniform(0.03, 0.08, n) * size, 0.35
    elif background == "moss":
        base, length, spread = (120, 160, 52), rng.uniform(0.01, 0.02, n) * size, 1.2
    else:  # needles and leaf scraps
        base, length, spread = (150, 92, 52), rng.uniform(0.02, 0.05, n) * size, 1.3
    angles = rng.normal(0, spread, n)
    tips = roots + length[:, None] * np.stack([np.sin(angles), -np.cos(angles)], axis=1)
    width = max(1, round(size / 160))
    tones = scaled_tones(base, rng.uniform(0.7, 1.2, n))
    for root, tip, tone in zip(roots.tolist(), tips.tolist(), tones, strict=True):
        draw.line([tuple(root), tuple(tip)], fill=tone, width=width)


def _finish(photo: Image.Image, rng: np.random.Generator, exposure: Sequence[float]) -> bytes:
    """Camera and upload artefacts: exposure, colour temperature, defocus, noise, JPEG."""
    size = photo.width
    brightness = exposure[0] * rng.uniform(0.95, 1.05)
    contrast = exposure[1] * rng.uniform(0.96, 1.04)
    warmth = exposure[2] + rng.normal(0, 0.015)
    if rng.random() < 0.5:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9) * size / 256))
    # Exposure and white balance are per-channel tone curves: one lookup table.
    mean = float(np.asarray(photo).mean())
    curve = (np.arange(256, dtype=np.float64) - mean) * contrast + mean
    curve *= brightness
    table = np.concatenate([curve * (1 + warmth), curve, curve * (1 - warmth)])
    photo = photo.point(np.clip(table, 0, 255).round().astype(np.uint8).tolist())
    spread = int(rng.integers(3, 7))  # uniform sensor noise, standard deviation 2 to 3.7
    sensor = rng.integers(-spread, spread + 1, (size, size, 3), dtype=np.int16)
    pixels = np.asarray(photo, dtype=np.int16) + sensor
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.25:  # re-shared photos carry an earlier, harsher compression
        photo = _jpeg_roundtrip(photo, int(rng.integers(55, 80)))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(86, 94)))
    return buffer.getvalue()


def _jpeg_roundtrip(photo: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
