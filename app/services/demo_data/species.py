"""The species the demo draws: colour, cap shape, texture, stem and habitat of each."""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class DemoSpecies:
    """How one species is drawn. Lengths are in cap-radius units of the subject canvas."""

    name: str
    cap_shape: str  # convex | flat | conical | funnel | bell | shelf
    cap_rgb: RGB
    texture: str  # warts | smooth | ridges | scales | gills | pits | bands
    texture_rgb: RGB
    gill_rgb: RGB  # underside: gills, pores, ridges, or a bracket's margin
    stem_rgb: RGB
    cap_width: float
    cap_height: float
    stem_height: float  # 0 for brackets, which grow straight from wood
    stem_width: float
    stem_style: str = "plain"  # plain | bulb | club | taper | snakeskin
    # Scenes it is usually found in (forest_floor, moss, leaf_litter, grass; bark for wood).
    habitat: tuple[str, ...] = ("forest_floor", "moss")

    @property
    def folder(self) -> str:
        """Directory name: the scientific name with underscores."""
        return self.name.replace(" ", "_")

    @property
    def on_wood(self) -> bool:
        """Grows on trees: no stem, photographed against bark."""
        return self.habitat == ("bark",)


DEMO_SPECIES: tuple[DemoSpecies, ...] = (
    DemoSpecies(
        "Amanita muscaria", "convex", (200, 32, 26), "warts", (246, 240, 222), (244, 238, 220),
        (242, 236, 222), 1.1, 0.62, 1.7, 0.24, "bulb", ("forest_floor", "moss"),
    ),
    DemoSpecies(
        "Boletus edulis", "convex", (122, 74, 38), "smooth", (150, 98, 54), (222, 206, 140),
        (222, 204, 168), 1.15, 0.78, 1.15, 0.46, "club", ("moss", "forest_floor"),
    ),
    DemoSpecies(
        "Cantharellus cibarius", "funnel", (242, 168, 28), "ridges", (232, 150, 22),
        (246, 186, 60), (244, 182, 62), 1.15, 0.8, 0.9, 0.26, "taper", ("moss", "leaf_litter"),
    ),
    DemoSpecies(
        "Coprinus comatus", "bell", (246, 243, 236), "scales", (176, 134, 92), (236, 232, 226),
        (246, 246, 240), 0.52, 1.9, 1.0, 0.17, "plain", ("grass",),
    ),
    DemoSpecies(
        "Laccaria amethystina", "flat", (122, 50, 150), "gills", (92, 32, 118), (150, 84, 176),
        (138, 78, 160), 0.95, 0.28, 1.5, 0.13, "plain", ("leaf_litter", "moss"),
    ),
    DemoSpecies(
        "Morchella esculenta", "conical", (212, 180, 112), "pits", (104, 78, 44),
        (212, 180, 112), (236, 226, 200), 0.62, 1.5, 0.85, 0.36, "plain",
        ("leaf_litter", "forest_floor"),
    ),
    DemoSpecies(
        "Macrolepiota procera", "flat", (226, 210, 180), "scales", (118, 78, 48), (246, 242, 232),
        (206, 186, 154), 1.35, 0.36, 2.3, 0.13, "snakeskin", ("grass", "leaf_litter"),
    ),
    DemoSpecies(
        "Fomes fomentarius", "shelf", (150, 140, 126), "bands", (92, 78, 64), (178, 150, 112),
        (0, 0, 0), 1.2, 0.8, 0.0, 0.0, "plain", ("bark",),
    ),
)  # fmt: skip
