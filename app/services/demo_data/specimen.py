"""One physical mushroom and its scene, drawn at random from its species for an observation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.services.demo_data.drawing import to_rgb
from app.services.demo_data.species import RGB, DemoSpecies

_GROUND_BACKGROUNDS = ("forest_floor", "moss", "leaf_litter", "grass")


@dataclass(frozen=True)
class Specimen:
    """One physical mushroom and the scene it was found in: shared by an observation's photos."""

    cap_rgb: RGB
    texture_rgb: RGB
    gill_rgb: RGB
    stem_rgb: RGB
    bend: float  # stem lean, in cap radii
    tilt: float  # degrees
    fill: float  # framing: the subject's larger side, as a fraction of the frame
    x: float  # framing: anchor position, fractions of the frame
    y: float
    light: float  # direction light comes from, radians
    count: int  # brackets in a cluster
    background: str
    background_seed: int
    detail_seed: int  # warts, scales, pits: identical in every photo of the specimen
    exposure: tuple[float, float, float]  # brightness, contrast, warmth of the session


def make_specimen(species: DemoSpecies, rng: np.random.Generator) -> Specimen:
    def vary(rgb: RGB, spread: float = 0.06) -> RGB:
        factor = 1 + rng.normal(0, spread) + rng.normal(0, spread / 2, 3)
        return to_rgb(np.asarray(rgb) * factor)

    on_wood = species.on_wood
    return Specimen(
        cap_rgb=vary(species.cap_rgb),
        texture_rgb=vary(species.texture_rgb),
        gill_rgb=vary(species.gill_rgb, 0.04),
        stem_rgb=vary(species.stem_rgb, 0.04),
        bend=float(rng.normal(0, 0.18)),
        tilt=float(rng.normal(0, 3 if on_wood else 6)),
        fill=float(rng.uniform(0.65, 0.85)),
        x=float(rng.uniform(0.42, 0.58)),
        y=float(rng.uniform(0.45, 0.55) if on_wood else rng.uniform(0.86, 0.92)),
        light=float(rng.uniform(-2.6, -0.5)),  # mostly from above
        count=int(rng.integers(1, 4)),
        background=_pick_background(species, rng),
        background_seed=int(rng.integers(2**63)),
        detail_seed=int(rng.integers(2**63)),
        exposure=(
            float(rng.uniform(0.85, 1.15)),
            float(rng.uniform(0.88, 1.12)),
            float(rng.uniform(-0.05, 0.05)),
        ),
    )


def _pick_background(species: DemoSpecies, rng: np.random.Generator) -> str:
    """Usually the species' habitat; sometimes any ground, so the scene is a hint, not a label."""
    if species.on_wood:
        return "bark"
    if rng.random() < 0.7:
        return str(rng.choice(species.habitat))
    return str(rng.choice(_GROUND_BACKGROUNDS))
