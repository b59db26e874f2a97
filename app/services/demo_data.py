"""Synthetic demo dataset: procedurally drawn wild-mushroom photos in `species/image.jpg` layout.

The product offers it on first run, and tests train classifiers and score curation on it. Each
species differs in cap shape, colour, texture and stem; each photo varies in pose, framing,
background and lighting; a few planted anomalies (fingers, people, micrographs, landscapes, far
too small subjects) sit in species folders like real mislabelled uploads. Every image draws from
its own generator keyed by (seed, species, image), so a seed always yields byte-identical files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

ANOMALY_KINDS: tuple[str, ...] = ("finger", "person", "microscopy", "scenery", "tiny")
MANIFEST_NAME = "manifest.csv"
_FIELDS = ("path", "species", "observation_id", "anomaly")

RGB = tuple[int, int, int]
Point = tuple[float, float]

# Distinct salts keep the generators for plans, observations and images from ever coinciding.
_SALT_PLAN, _SALT_ANOMALY, _SALT_OBSERVATION, _SALT_IMAGE = 11, 13, 17, 19
_OBSERVATION_SIZES = (1, 2, 3, 4)
_OBSERVATION_WEIGHTS = (0.25, 0.35, 0.25, 0.15)
_GROUND_BACKGROUNDS = ("forest_floor", "moss", "leaf_litter", "grass")


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
    habitat: str = "ground"  # ground | wood

    @property
    def folder(self) -> str:
        """Directory name: the scientific name with underscores."""
        return self.name.replace(" ", "_")


DEMO_SPECIES: tuple[DemoSpecies, ...] = (
    DemoSpecies(
        "Amanita muscaria", "convex", (200, 32, 26), "warts", (246, 240, 222), (244, 238, 220),
        (242, 236, 222), 1.1, 0.62, 1.7, 0.24, "bulb",
    ),
    DemoSpecies(
        "Boletus edulis", "convex", (122, 74, 38), "smooth", (150, 98, 54), (222, 206, 140),
        (222, 204, 168), 1.15, 0.78, 1.15, 0.46, "club",
    ),
    DemoSpecies(
        "Cantharellus cibarius", "funnel", (242, 168, 28), "ridges", (232, 150, 22),
        (246, 186, 60), (244, 182, 62), 1.15, 0.8, 0.9, 0.26, "taper",
    ),
    DemoSpecies(
        "Coprinus comatus", "bell", (246, 243, 236), "scales", (176, 134, 92), (236, 232, 226),
        (246, 246, 240), 0.52, 1.9, 1.0, 0.17,
    ),
    DemoSpecies(
        "Laccaria amethystina", "flat", (122, 50, 150), "gills", (92, 32, 118), (150, 84, 176),
        (138, 78, 160), 0.95, 0.28, 1.5, 0.13,
    ),
    DemoSpecies(
        "Morchella esculenta", "conical", (212, 180, 112), "pits", (104, 78, 44),
        (212, 180, 112), (236, 226, 200), 0.62, 1.5, 0.85, 0.36,
    ),
    DemoSpecies(
        "Macrolepiota procera", "flat", (226, 210, 180), "scales", (118, 78, 48), (246, 242, 232),
        (206, 186, 154), 1.35, 0.36, 2.3, 0.13, "snakeskin",
    ),
    DemoSpecies(
        "Fomes fomentarius", "shelf", (150, 140, 126), "bands", (92, 78, 64), (178, 150, 112),
        (0, 0, 0), 1.2, 0.8, 0.0, 0.0, habitat="wood",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class DemoImage:
    """One generated photo: `path` is relative to the dataset root, with forward slashes."""

    path: str
    species: str
    observation_id: int
    anomaly: str | None


@dataclass(frozen=True)
class DemoManifest:
    """Everything a generation produced, as recorded in `<root>/manifest.csv`."""

    root: Path
    images: tuple[DemoImage, ...]

    @property
    def species(self) -> tuple[str, ...]:
        """Scientific names present, sorted."""
        return tuple(sorted({image.species for image in self.images}))

    @property
    def anomalies(self) -> tuple[DemoImage, ...]:
        """The planted anomalies, in manifest order."""
        return tuple(image for image in self.images if image.anomaly)

    def path_of(self, image: DemoImage) -> Path:
        """Absolute location of `image` on disk."""
        return self.root / image.path


# ---------------------------------------------------------------- public entry points


def generate_demo_dataset(
    out_dir: Path,
    *,
    per_species: int = 60,
    species_count: int | None = None,
    anomaly_fraction: float = 0.04,
    image_size: int = 256,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DemoManifest:
    """Draw the demo dataset into `out_dir` and write its manifest; returns the manifest.

    `out_dir` must be missing, empty, or a previous demo dataset (it has a manifest.csv); images a
    previous generation listed but this one does not are removed, nothing else is touched.
    """
    count = _validate(per_species, species_count, anomaly_fraction, image_size, seed)
    out_dir = Path(out_dir)
    previous = _claim_folder(out_dir)
    jobs = _plan(count, per_species, anomaly_fraction, seed)
    if progress:
        progress(0, len(jobs))
    images = []
    for done, job in enumerate(jobs, start=1):
        species = DEMO_SPECIES[job.species_index]
        path = f"{species.folder}/{job.image_index:04d}.jpg"
        _write_atomic(out_dir / path, _render(job, species, image_size, seed))
        images.append(DemoImage(path, species.name, job.observation_id, job.anomaly))
        if progress:
            progress(done, len(jobs))
    manifest = DemoManifest(out_dir, tuple(images))
    _write_manifest(manifest)
    if previous is not None:
        _remove_stale(previous, manifest)
    return manifest


def read_manifest(root: Path) -> DemoManifest:
    """Load `<root>/manifest.csv`; FileNotFoundError if absent, ValueError if malformed."""
    root = Path(root)
    with (root / MANIFEST_NAME).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != _FIELDS:
            raise ValueError(f"{root / MANIFEST_NAME}: expected columns {', '.join(_FIELDS)}")
        images = []
        for line, row in enumerate(reader, start=2):
            anomaly = row["anomaly"] or None
            if anomaly is not None and anomaly not in ANOMALY_KINDS:
                raise ValueError(f"{root / MANIFEST_NAME}:{line}: unknown anomaly {anomaly!r}")
            try:
                observation_id = int(row["observation_id"])
            except (TypeError, ValueError):
                raise ValueError(f"{root / MANIFEST_NAME}:{line}: bad observation_id") from None
            images.append(DemoImage(row["path"], row["species"], observation_id, anomaly))
    return DemoManifest(root, tuple(images))


# ---------------------------------------------------------------- planning and files


@dataclass(frozen=True)
class _Job:
    species_index: int
    image_index: int  # within the species
    observation_index: int  # within the species: keys the specimen's generator
    observation_id: int  # unique across the dataset
    anomaly: str | None


def _validate(
    per_species: int,
    species_count: int | None,
    anomaly_fraction: float,
    image_size: int,
    seed: int,
) -> int:
    count = len(DEMO_SPECIES) if species_count is None else species_count
    if per_species < 1:
        raise ValueError(f"per_species must be at least 1, got {per_species}")
    if not 1 <= count <= len(DEMO_SPECIES):
        raise ValueError(f"species_count must be between 1 and {len(DEMO_SPECIES)}, got {count}")
    if not 0 <= anomaly_fraction < 0.5:
        raise ValueError(f"anomaly_fraction must be in [0, 0.5), got {anomaly_fraction}")
    if not 32 <= image_size <= 1024:
        raise ValueError(f"image_size must be between 32 and 1024 pixels, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return count


def _claim_folder(out_dir: Path) -> DemoManifest | None:
    """Refuse a folder holding anything but a previous demo dataset; return that one's manifest."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if not out_dir.exists():
        return None
    if (out_dir / MANIFEST_NAME).is_file():
        try:
            return read_manifest(out_dir)
        except ValueError:
            return None  # ours but damaged: regenerate, and remove nothing we cannot vouch for
    if any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} is not empty and holds no {MANIFEST_NAME}, so it is not a demo dataset; "
            "choose a new or empty folder"
        )
    return None


def _plan(species_count: int, per_species: int, anomaly_fraction: float, seed: int) -> list[_Job]:
    anomalies = _place_anomalies(species_count, per_species, anomaly_fraction, seed)
    jobs: list[_Job] = []
    next_id = 1
    for s in range(species_count):
        image_index = 0
        sizes = _observation_sizes(np.random.default_rng([seed, s, _SALT_PLAN]), per_species)
        for local, size in enumerate(sizes):
            for _ in range(size):
                anomaly = anomalies.get((s, image_index))
                jobs.append(_Job(s, image_index, local, next_id, anomaly))
                image_index += 1
            next_id += 1
    return jobs


def _observation_sizes(rng: np.random.Generator, total: int) -> list[int]:
    """Split `total` photos into observations of 1-4 photos each."""
    sizes: list[int] = []
    while sum(sizes) < total:
        size = int(rng.choice(_OBSERVATION_SIZES, p=_OBSERVATION_WEIGHTS))
        sizes.append(min(size, total - sum(sizes)))
    return sizes


def _place_anomalies(
    species_count: int, per_species: int, fraction: float, seed: int
) -> dict[tuple[int, int], str]:
    """Pick (species, image) slots for anomalies: round-robin over species, every kind if >= 5."""
    count = round(fraction * species_count * per_species)
    if count == 0:
        return {}
    rng = np.random.default_rng([seed, _SALT_ANOMALY])
    kinds = list(ANOMALY_KINDS) if count >= len(ANOMALY_KINDS) else []
    kinds += [str(rng.choice(ANOMALY_KINDS)) for _ in range(count - len(kinds))]
    rng.shuffle(kinds)
    order = rng.permutation(species_count)
    per = np.bincount(order[np.arange(count) % species_count], minlength=species_count)
    slots = [
        (s, int(i))
        for s in range(species_count)
        for i in sorted(rng.choice(per_species, size=int(per[s]), replace=False))
    ]
    return dict(zip(slots, kinds, strict=True))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary sibling and os.replace, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_manifest(manifest: DemoManifest) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_FIELDS)
    for image in manifest.images:
        writer.writerow([image.path, image.species, image.observation_id, image.anomaly or ""])
    _write_atomic(manifest.root / MANIFEST_NAME, buffer.getvalue().encode("utf-8"))


def _remove_stale(previous: DemoManifest, current: DemoManifest) -> None:
    """Delete images an earlier generation listed that this one did not rewrite."""
    keep = {image.path for image in current.images}
    for image in previous.images:
        relative = PurePosixPath(image.path)
        if image.path in keep or relative.is_absolute() or ".." in relative.parts:
            continue  # never follow a hand-edited manifest out of the dataset
        target = current.root / relative
        target.unlink(missing_ok=True)
        if target.parent != current.root:
            with contextlib.suppress(OSError):  # only succeeds once the species folder is empty
                target.parent.rmdir()


# ---------------------------------------------------------------- one photo


@dataclass(frozen=True)
class _Specimen:
    """One physical mushroom and the scene it was found in: shared by an observation's photos."""

    cap_rgb: RGB
    texture_rgb: RGB
    gill_rgb: RGB
    stem_rgb: RGB
    size: float  # multiplier on the species' dimensions
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


def _render(job: _Job, species: DemoSpecies, size: int, seed: int) -> bytes:
    specimen = _specimen(
        species,
        np.random.default_rng([seed, job.species_index, job.observation_index, _SALT_OBSERVATION]),
    )
    rng = np.random.default_rng([seed, job.species_index, job.image_index, _SALT_IMAGE])
    if job.anomaly == "microscopy":
        photo = _microscopy(rng, size)
    elif job.anomaly == "scenery":
        photo = _scenery(rng, size)
    elif job.anomaly == "person":
        photo = _person_photo(species, specimen, rng, size)
    else:
        photo = _mushroom_photo(species, specimen, rng, size, tiny=job.anomaly == "tiny")
        if job.anomaly == "finger":
            _add_finger(photo, rng)
    return _finish(photo, rng, specimen.exposure)


def _specimen(species: DemoSpecies, rng: np.random.Generator) -> _Specimen:
    def vary(rgb: RGB, spread: float = 0.06) -> RGB:
        factor = 1 + rng.normal(0, spread) + rng.normal(0, spread / 2, 3)
        return _rgb(np.asarray(rgb) * factor)

    on_wood = species.habitat == "wood"
    return _Specimen(
        cap_rgb=vary(species.cap_rgb),
        texture_rgb=vary(species.texture_rgb),
        gill_rgb=vary(species.gill_rgb, 0.04),
        stem_rgb=vary(species.stem_rgb, 0.04),
        size=float(rng.uniform(0.9, 1.1)),
        bend=float(rng.normal(0, 0.18)),
        tilt=float(rng.normal(0, 3 if on_wood else 6)),
        fill=float(rng.uniform(0.6, 0.8)),
        x=float(rng.uniform(0.42, 0.58)),
        y=float(rng.uniform(0.45, 0.55) if on_wood else rng.uniform(0.86, 0.92)),
        light=float(rng.uniform(-2.6, -0.5)),  # mostly from above
        count=int(rng.integers(1, 4)),
        background="bark" if on_wood else str(rng.choice(_GROUND_BACKGROUNDS)),
        background_seed=int(rng.integers(2**63)),
        detail_seed=int(rng.integers(2**63)),
        exposure=(
            float(rng.uniform(0.85, 1.15)),
            float(rng.uniform(0.88, 1.12)),
            float(rng.uniform(-0.05, 0.05)),
        ),
    )


def _mushroom_photo(
    species: DemoSpecies,
    specimen: _Specimen,
    rng: np.random.Generator,
    size: int,
    *,
    tiny: bool = False,
) -> Image.Image:
    photo = _background(specimen, rng, size)
    layer, anchor = _draw_subject(species, specimen, size)
    box = layer.getbbox() or (0, 0, layer.width, layer.height)
    extent = max(box[2] - box[0], box[3] - box[1])  # photographers fill the frame with the find
    if tiny:  # a speck in a wide shot: still the species, but useless for training
        factor = rng.uniform(0.06, 0.1) * size / extent
        position = (rng.uniform(0.2, 0.8) * size, rng.uniform(0.3, 0.85) * size)
    else:
        factor = specimen.fill * rng.uniform(0.94, 1.06) * size / extent
        position = (
            (specimen.x + rng.normal(0, 0.02)) * size,
            (specimen.y + rng.normal(0, 0.015)) * size,
        )
    angle = specimen.tilt + rng.normal(0, 3)
    shadow = "drop" if species.habitat == "wood" else "contact"
    _place(photo, layer, anchor, position, factor, angle, shadow)
    if species.habitat == "ground" and not tiny:
        _ground_clutter(photo, position, 0.25 * factor * size, specimen.background, rng)
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
    tones = _tones(base, rng.uniform(0.7, 1.2, n))
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


def _place(
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
    _ellipse(ImageDraw.Draw(mask), at[0] - left, at[1] - top, radius, 0.3 * radius, 150)
    photo.paste((10, 8, 5), (left, top), mask.filter(ImageFilter.GaussianBlur(blur)))


# ---------------------------------------------------------------- the mushroom


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


def _draw_subject(
    species: DemoSpecies, specimen: _Specimen, size: int
) -> tuple[Image.Image, Point]:
    """Draw the specimen on a transparent canvas, supersampled twice for antialiasing; returns
    the canvas and its anchor: the stem's foot, or the middle of a bracket cluster."""
    # One unit is a fifth of the doubled photo; the tallest species spans about 3.2 units.
    unit = 0.4 * size * specimen.size
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
    _shade(layer, specimen.light)
    return layer, anchor


def _draw_mushroom(
    layer: Image.Image,
    species: DemoSpecies,
    specimen: _Specimen,
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
        cap_mask = _mask(layer.size, outline)
    _draw_texture(layer, cap_mask, species, specimen, g, rng)
    _draw_highlight(layer, cap_mask, g, 120 if species.texture == "smooth" else 60)


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
    specimen: _Specimen,
    g: _Geometry,
    rng: np.random.Generator,
) -> None:
    """Gills (lines radiating from the stem) or pores (stipple) seen under the rim."""
    ry = (0.2 if species.cap_shape == "flat" else 0.16) * g.rw
    draw = ImageDraw.Draw(layer)
    _ellipse(draw, g.top_x, g.rim_y, 0.97 * g.rw, ry, (*specimen.gill_rgb, 255))
    shade = _rgb(np.asarray(specimen.gill_rgb) * 0.78)
    if species.texture == "smooth":  # boletes have pores, not gills
        for px, py in _sample_in(_ellipse_mask(layer.size, g.top_x, g.rim_y, g.rw, ry), 90, rng):
            _ellipse(draw, px, py, 0.012 * g.unit, 0.008 * g.unit, (*shade, 255))
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
    specimen: _Specimen,
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
    _clip_paste(layer, texture, _mask(layer.size, outline))
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
        tone = _rgb(np.asarray(rgb) * rng.uniform(0.82, 1.1))
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
    tone = (*_rgb(np.asarray(rgb) * 0.8), 200)
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
    tone = (*_rgb(np.asarray(rgb) * 0.9), 255)
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
    draw.polygon(skirt, fill=(*_rgb(np.asarray(rgb) * 1.03), 255))
    edge = (*_rgb(np.asarray(rgb) * 0.78), 255)
    draw.line([skirt[3], skirt[2]], fill=edge, width=max(1, round(0.02 * unit)))


def _draw_funnel(
    layer: Image.Image, specimen: _Specimen, g: _Geometry, rng: np.random.Generator
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
    tone = (*_rgb(np.asarray(specimen.gill_rgb) * 0.8), 255)
    width = max(1, round(0.015 * g.unit))
    for angle in np.linspace(0.12, np.pi - 0.12, 15):
        start = (x + 1.2 * g.sw * math.cos(angle), y)
        end = (x + rw * math.cos(angle), top + ry * math.sin(angle))
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ridge_draw.line([start, end], fill=tone, width=width)
        fork = (end[0] + 0.08 * rw, end[1])  # ridges fork towards the margin
        ridge_draw.line([middle, fork], fill=tone, width=width)
    _clip_paste(layer, ridges, _mask(layer.size, body))
    inner = [(x + rw * math.cos(b) * 0.97, top + ry * math.sin(b) * 0.97) for b in a]
    inner += [(px, 2 * top - py) for px, py in reversed(inner)]  # mirror: the far half
    draw.polygon(inner, fill=(*specimen.cap_rgb, 255))
    _ellipse(
        draw,
        x,
        top - 0.1 * ry,
        0.35 * rw,
        0.3 * ry,
        (*_rgb(np.asarray(specimen.cap_rgb) * 0.85), 255),
    )
    return _mask(layer.size, inner)


def _draw_texture(
    layer: Image.Image,
    cap_mask: Image.Image,
    species: DemoSpecies,
    specimen: _Specimen,
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
    _clip_paste(layer, texture, cap_mask)


def _warts(
    draw: ImageDraw.ImageDraw,
    mask: Image.Image,
    rgb: RGB,
    cap_rgb: RGB,
    g: _Geometry,
    rng: np.random.Generator,
) -> None:
    """Fly agaric: white veil remnants, smaller towards the rim, each with a shadowed side."""
    dark = (*_rgb(np.asarray(cap_rgb) * 0.6), 255)
    for px, py in _sample_in(mask, 34, rng):
        depth = 0.5 + 0.5 * min(1.0, (g.rim_y - py) / max(g.ch, 1.0))
        r = g.unit * rng.uniform(0.035, 0.075) * depth
        _ellipse(draw, px, py + 0.25 * r, r, 0.7 * r, dark)
        _ellipse(draw, px, py, r, 0.7 * r, (*rgb, 255))


def _scales(
    draw: ImageDraw.ImageDraw, mask: Image.Image, rgb: RGB, g: _Geometry, rng: np.random.Generator
) -> None:
    """Shaggy ink cap, parasol: a dark crown and recurved scales pointing down."""
    box = mask.getbbox() or (0, 0, 1, 1)
    crown_y = box[1] + 0.08 * (box[3] - box[1])
    _ellipse(draw, g.top_x, crown_y, 0.32 * g.rw, max(0.06 * g.unit, 0.06 * g.ch), (*rgb, 255))
    for px, py in _sample_in(mask, 70, rng):
        s = g.unit * rng.uniform(0.025, 0.05)
        tone = (*_rgb(np.asarray(rgb) * rng.uniform(0.8, 1.15)), int(rng.integers(170, 255)))
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
            tone = (*_rgb(np.asarray(rgb) * rng.uniform(0.75, 1.2)), 255)
            pit = _ellipse_points(
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


def _draw_highlight(layer: Image.Image, mask: Image.Image, g: _Geometry, strength: int) -> None:
    """A soft sheen on the upper-left of the cap, so it reads as a rounded surface."""
    box = mask.getbbox()
    if box is None:
        return
    w, h = box[2] - box[0], box[3] - box[1]
    glow = Image.new("RGBA", (w, h), (255, 250, 240, 0))
    _ellipse(ImageDraw.Draw(glow), 0.35 * w, 0.3 * h, 0.2 * w, 0.15 * h, (255, 250, 240, strength))
    glow = glow.filter(ImageFilter.GaussianBlur(max(1.0, 0.1 * min(w, h))))
    coverage = ImageChops.multiply(glow.getchannel("A"), mask.crop(box))
    layer.paste(glow.convert("RGB"), box[:2], coverage)


def _draw_brackets(
    layer: Image.Image,
    species: DemoSpecies,
    specimen: _Specimen,
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
    specimen: _Specimen,
    x: float,
    y: float,
    w: float,
    h: float,
    rng: np.random.Generator,
) -> None:
    draw = ImageDraw.Draw(layer)
    _ellipse(draw, x, y + 0.9 * h, 0.85 * w, 0.2 * h, (*specimen.gill_rgb, 255))  # pore surface
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
        tone = specimen.texture_rgb if i % 2 else _rgb(np.asarray(specimen.cap_rgb) * 1.12)
        band_draw.line(arc, fill=(*tone, 230), width=width)
    margin = [(x + w * math.cos(b), y + h * math.sin(b)) for b in a]
    band_draw.line(margin, fill=(*specimen.gill_rgb, 255), width=2 * width)
    _clip_paste(layer, bands, _mask(layer.size, outline))


def _shade(layer: Image.Image, light: float) -> None:
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


# ---------------------------------------------------------------- backgrounds


def _background(specimen: _Specimen, rng: np.random.Generator, size: int) -> Image.Image:
    """The specimen's scene, cropped differently per photo and slightly out of focus."""
    big = round(size * 1.2)
    scene_rng = np.random.default_rng(specimen.background_seed)
    scene = _BACKGROUNDS[specimen.background](scene_rng, big)
    left, top = (int(v) for v in rng.integers(0, big - size + 1, 2))
    scene = scene.crop((left, top, left + size, top + size))
    return scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2) * size / 256))


def _fractal(rng: np.random.Generator, size: int, cells: Sequence[tuple[int, int]]) -> np.ndarray:
    """Smooth value noise in [0, 1]: random grids of (rows, cols) upsampled and summed."""
    total = np.zeros((size, size), dtype=np.float32)
    for i, (rows, cols) in enumerate(cells):
        grid = (rng.random((rows, cols)) * 255).astype(np.uint8)
        up = Image.fromarray(grid, "L").resize((size, size), Image.Resampling.BICUBIC)
        total += np.asarray(up, dtype=np.float32) * 0.6**i
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def _colorize(noise: np.ndarray, dark: RGB, light: RGB) -> Image.Image:
    """Map noise in [0, 1] onto a dark-to-light palette (a lookup table, so it is cheap)."""
    grey = Image.fromarray(np.clip(noise * 255, 0, 255).astype(np.uint8), "L")
    return ImageOps.colorize(grey, dark, light)


def _grainy(noise: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Per-pixel speckle on top of smooth noise: soil crumbs, moss fronds."""
    return noise + rng.standard_normal(noise.shape, dtype=np.float32) * np.float32(amount)


def _to_mask(opacity: np.ndarray) -> Image.Image:
    """Opacity in [0, 1] as an 8-bit mask."""
    return Image.fromarray((np.clip(opacity, 0, 1) * 255).astype(np.uint8), "L")


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _forest_floor(rng: np.random.Generator, size: int) -> Image.Image:
    noise = _fractal(rng, size, [(4, 4), (9, 9), (24, 24), (70, 70)])
    image = _colorize(_grainy(noise, rng, 0.1), (44, 33, 24), (120, 94, 64))
    draw = ImageDraw.Draw(image)
    n = 140  # fallen needles
    starts = rng.uniform(0, size, (n, 2))
    angles, lengths = rng.uniform(0, np.pi, n), rng.uniform(0.03, 0.07, n) * size
    ends = starts + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    tones = _tones((150, 92, 52), rng.uniform(0.6, 1.2, n))
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
    tone = _rgb(np.array((70, 52, 36)) * rng.uniform(0.7, 1.4))
    draw.line(points, fill=tone, width=max(1, round(size / 90)), joint="curve")


def _moss(rng: np.random.Generator, size: int) -> Image.Image:
    noise = _fractal(rng, size, [(5, 5), (12, 12), (40, 40), (110, 110)])
    image = _colorize(_grainy(noise, rng, 0.14), (30, 56, 18), (118, 160, 52))
    draw = ImageDraw.Draw(image)
    n, r = 260, max(0.6, size / 300)  # sporophyte tips catching light
    tips = rng.uniform(0, size, (n, 2)).tolist()
    for (x, y), tone in zip(tips, _tones((170, 190, 80), rng.uniform(0.8, 1.2, n)), strict=True):
        _ellipse(draw, x, y, r, r, tone)
    return image


def _leaf_litter(rng: np.random.Generator, size: int) -> Image.Image:
    noise = _fractal(rng, size, [(4, 4), (10, 10), (30, 30)])
    image = _colorize(noise, (60, 42, 26), (112, 82, 50))
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
        tone = _rgb(colour)
        draw.polygon(_ellipse_points(x, y, length / 2, length / 5, angle=angle), fill=tone)
        dx, dy = length / 2 * math.cos(angle), length / 2 * math.sin(angle)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=_rgb(colour * 0.7), width=width)
    return image


def _grass(rng: np.random.Generator, size: int) -> Image.Image:
    noise = _fractal(rng, size, [(4, 4), (12, 12), (36, 36)])
    image = _colorize(noise, (46, 60, 26), (96, 112, 48))
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
        draw.line([tuple(p) for p in blade], fill=_rgb(colour), width=width)
    return image


def _bark(rng: np.random.Generator, size: int) -> Image.Image:
    # Stretched noise: long vertical ridges and fissures.
    noise = _fractal(rng, size, [(3, 8), (6, 20), (14, 60), (40, 120)])
    image = _colorize(_grainy(noise, rng, 0.06), (50, 44, 38), (150, 140, 124))
    fissures = _fractal(rng, size, [(4, 12), (10, 40)]) < 0.3
    image.paste((0, 0, 0), (0, 0, size, size), _to_mask(fissures * 0.45))
    lichen = _fractal(rng, size, [(4, 4), (10, 10)])
    moss = np.clip((lichen - 0.62) * 5, 0, 1) * rng.uniform(0.3, 1.0)
    image.paste(_colorize(lichen, (70, 110, 40), (150, 170, 110)), (0, 0), _to_mask(moss))
    return image


_BACKGROUNDS: dict[str, Callable[[np.random.Generator, int], Image.Image]] = {
    "forest_floor": _forest_floor,
    "moss": _moss,
    "leaf_litter": _leaf_litter,
    "grass": _grass,
    "bark": _bark,
}


# ---------------------------------------------------------------- anomalies


def _add_finger(photo: Image.Image, rng: np.random.Generator) -> None:
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
    tone = Image.new("RGB", photo.size, _rgb(skin * 0.72))
    draw = ImageDraw.Draw(tone)
    draw.polygon(_capsule(base, tip - 0.12 * width * axis, 0.5 * width), fill=_rgb(skin * 1.06))
    tone = tone.filter(ImageFilter.GaussianBlur(0.16 * width))
    draw = ImageDraw.Draw(tone)
    for back in (1.0, 1.9):  # knuckle creases
        centre = tip - back * width * axis
        ends = [tuple(centre - 0.32 * width * normal), tuple(centre + 0.32 * width * normal)]
        draw.line(ends, fill=_rgb(skin * 0.66), width=max(1, round(0.035 * width)))
    if rng.random() < 0.7:  # the nail side faces the camera
        nail = _capsule(tip - 0.62 * width * axis, tip - 0.12 * width * axis, 0.56 * width)
        draw.polygon(nail, fill=_rgb(skin * (1.1, 1.0, 1.02) + 12), outline=_rgb(skin * 0.75))
    defocus = ImageFilter.GaussianBlur(rng.uniform(0.008, 0.02) * size)
    alpha = _mask(photo.size, _capsule(base, tip, width)).filter(defocus)
    photo.paste(tone.filter(defocus), (0, 0), alpha)


def _skin(rng: np.random.Generator) -> RGB:
    tones = np.array([(236, 188, 160), (224, 172, 138), (198, 134, 106), (141, 85, 60)])
    return _rgb(tones[rng.integers(len(tones))] * rng.uniform(0.93, 1.07))


def _person_photo(
    species: DemoSpecies, specimen: _Specimen, rng: np.random.Generator, size: int
) -> Image.Image:
    """Someone posing in the woods, sometimes with the find small at their feet."""
    photo = _background(specimen, rng, size) if rng.random() < 0.6 else _scenery(rng, size)
    if rng.random() < 0.4:
        layer, anchor = _draw_subject(species, specimen, size)
        spot = (rng.uniform(0.15, 0.85) * size, 0.95 * size)
        _place(photo, layer, anchor, spot, 0.5 * rng.uniform(0.15, 0.25), 0.0, "contact")
    layer, anchor, reach = _draw_person(rng, size)
    # Full length, or waist up with head and shoulders filling the frame.
    factor = rng.uniform(0.45, 0.52) if rng.random() < 0.5 else rng.uniform(0.9, 1.1)
    head_top = rng.uniform(0.03, 0.1) * size
    position = (rng.uniform(0.38, 0.62) * size, head_top + reach * factor)
    _place(photo, layer, anchor, position, factor, rng.normal(0, 4))
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
    jacket = _rgb(clothes[rng.integers(len(clothes))] * rng.uniform(0.8, 1.1))
    trousers = _rgb(np.array((50, 52, 64)) * rng.uniform(0.7, 1.5))
    skin = _skin(rng)
    layer = Image.new("RGBA", (canvas, canvas), (*jacket, 0))
    draw = ImageDraw.Draw(layer)

    def at(dx: float, dy: float) -> np.ndarray:
        return np.array([cx + dx * height, top + dy * height])

    for side in (-1, 1):
        draw.polygon(
            _capsule(at(0.05 * side, 0.5), at(0.07 * side, 0.95), 0.085 * height),
            fill=(*trousers, 255),
        )
        foot = at(0.08 * side, 0.97)
        _ellipse(draw, foot[0], foot[1], 0.05 * height, 0.025 * height, (40, 30, 24, 255))
    torso = [at(-0.13, 0.16), at(0.13, 0.16), at(0.11, 0.52), at(-0.11, 0.52)]
    draw.polygon([tuple(p) for p in torso], fill=(*jacket, 255))
    draw.line(
        [tuple(at(0, 0.17)), tuple(at(0, 0.52))],
        fill=(*_rgb(np.asarray(jacket) * 0.6), 255),
        width=max(1, round(0.006 * height)),
    )
    sleeve = (*_rgb(np.asarray(jacket) * 0.9), 255)
    for side in (-1, 1):
        shoulder, elbow = at(0.125 * side, 0.18), at(0.17 * side, 0.34)
        hand = at((0.15 + rng.uniform(-0.03, 0.05)) * side, rng.uniform(0.44, 0.5))
        draw.polygon(_capsule(shoulder, elbow, 0.07 * height), fill=sleeve)
        draw.polygon(_capsule(elbow, hand, 0.065 * height), fill=sleeve)
        _ellipse(draw, hand[0], hand[1], 0.035 * height, 0.035 * height, (*skin, 255))
    if rng.random() < 0.5:  # a forager's basket
        hand = at(0.17, 0.5)
        _ellipse(
            draw,
            hand[0],
            hand[1] + 0.06 * height,
            0.09 * height,
            0.06 * height,
            (150, 105, 55, 255),
        )
    neck = at(0, 0.14)
    _ellipse(draw, neck[0], neck[1], 0.035 * height, 0.03 * height, (*skin, 255))
    head = at(0, 0.075)
    r = 0.065 * height
    _ellipse(draw, head[0], head[1], 0.85 * r, r, (*skin, 255))
    hair = _rgb(np.array((60, 40, 25)) * rng.uniform(0.4, 2.0))
    draw.chord(
        [head[0] - 0.9 * r, head[1] - 1.08 * r, head[0] + 0.9 * r, head[1] + 0.5 * r],
        180,
        360,
        fill=(*hair, 255),
    )
    for side in (-1, 1):
        _ellipse(
            draw,
            head[0] + 0.33 * r * side,
            head[1] + 0.1 * r,
            0.08 * r,
            0.08 * r,
            (30, 25, 20, 255),
        )
    draw.arc(
        [head[0] - 0.3 * r, head[1] + 0.2 * r, head[0] + 0.3 * r, head[1] + 0.6 * r],
        20,
        160,
        fill=(120, 60, 50, 255),
        width=max(1, round(0.05 * r)),
    )
    _shade(layer, -2.0)
    return layer, (cx, top + 0.97 * height), 0.96 * height


def _microscopy(rng: np.random.Generator, size: int) -> Image.Image:
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
    _ellipse(draw, centre[0], centre[1], radius, radius, field_rgb)
    fill = _rgb(0.45 * np.asarray(stain) + 0.55 * np.asarray(field_rgb))
    outline = _rgb(np.asarray(stain) * 0.8)
    for _ in range(int(rng.integers(2, 5))):
        _hypha(draw, rng, centre, radius, fill, outline)
    spore = rng.uniform(0.018, 0.03) * canvas
    for _ in range(int(rng.integers(25, 70))):
        r, angle = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        x, y = centre[0] + r * math.cos(angle), centre[1] + r * math.sin(angle)
        rx = spore * rng.uniform(0.85, 1.15)
        points = _ellipse_points(x, y, rx, rx * rng.uniform(0.55, 0.8), angle=rng.uniform(0, np.pi))
        draw.polygon(points, fill=fill, outline=outline, width=max(1, round(0.12 * rx)))
        _ellipse(draw, x + 0.2 * rx, y - 0.1 * rx, 0.25 * rx, 0.25 * rx, field_rgb)  # oil drop
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
    for (x0, y0), (x1, y1) in zip(points[1::2], points[2::2], strict=False):  # septa
        draw.line([(x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2)], fill=outline, width=1)


def _vignette(image: Image.Image, centre: np.ndarray, radius: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    ys, xs = np.ogrid[: image.height, : image.width]
    distance = np.hypot(xs - centre[0], ys - centre[1]) / radius
    falloff = np.clip(1 - 0.45 * distance**3, 0.0, 1.0)
    return _to_image(pixels * falloff[..., None])


def _scenery(rng: np.random.Generator, size: int) -> Image.Image:
    """A landscape: sky, hills, a line of conifers, meadow or lake. No mushroom."""
    horizon = rng.uniform(0.45, 0.65) * size
    zenith = np.array((70, 120, 200)) * rng.uniform(0.85, 1.1)
    haze = np.array((250, 190, 140)) if rng.random() < 0.25 else np.array((196, 214, 236))
    t = np.clip(np.arange(size, dtype=np.float32) / horizon, 0, 1)[:, None, None]
    pixels = np.broadcast_to(zenith + (haze - zenith) * t, (size, size, 3)).copy()
    image = _to_image(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):  # clouds
        x, y = rng.uniform(0, size), rng.uniform(0.05, 0.6) * horizon
        _ellipse(
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
        tone = _rgb(np.array((30, 62, 36)) * rng.uniform(0.7, 1.2))
        draw.polygon([(x - w, horizon + 2), (x + w, horizon + 2), (x, horizon - h)], fill=tone)
    ground = _fractal(rng, size, [(4, 4), (16, 16)])[int(horizon) :]
    if rng.random() < 0.3:
        low = _colorize(ground, (60, 96, 150), (120, 160, 200))  # a lake
    else:
        low = _colorize(ground, (70, 110, 40), (160, 170, 80))  # a meadow
    image.paste(low, (0, int(horizon)))
    return image


def _ridge(rng: np.random.Generator, n: int) -> np.ndarray:
    """A smooth random profile in [-1, 1]."""
    coarse = rng.uniform(-1, 1, 6)
    fine = np.interp(np.linspace(0, 5, n), np.arange(6), coarse)
    return np.clip(fine + rng.normal(0, 0.08, n), -1, 1)


# ---------------------------------------------------------------- drawing helpers


def _rgb(values: np.ndarray | Sequence[float]) -> RGB:
    r, g, b = (min(255, max(0, round(float(v)))) for v in values)
    return r, g, b


def _tones(base: RGB, factors: np.ndarray) -> list[RGB]:
    """`base` scaled by each factor: one colour per strewn thing."""
    values = np.clip(np.outer(factors, base), 0, 255).round().astype(int)
    return [(r, g, b) for r, g, b in values.tolist()]


def _ellipse(
    draw: ImageDraw.ImageDraw,
    x: float,
    y: float,
    rx: float,
    ry: float,
    fill: tuple[int, ...] | int,
) -> None:
    rx, ry = max(rx, 0.5), max(ry, 0.5)  # Pillow rejects inverted boxes
    draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill)


def _ellipse_points(
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


def _capsule(start: np.ndarray, end: np.ndarray, width: float) -> list[Point]:
    """A stroke with round ends, as a polygon: fingers, limbs."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    heading = math.atan2(end[1] - start[1], end[0] - start[0])
    r = width / 2
    caps = []
    for centre, offset in ((end, -np.pi / 2), (start, np.pi / 2)):
        a = np.linspace(heading + offset, heading + offset + np.pi, 9)
        caps += list(zip(centre[0] + r * np.cos(a), centre[1] + r * np.sin(a), strict=True))
    return caps


def _mask(size: tuple[int, int], outline: Sequence[Point]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(list(outline), fill=255)
    return mask


def _ellipse_mask(size: tuple[int, int], x: float, y: float, rx: float, ry: float) -> Image.Image:
    mask = Image.new("L", size, 0)
    _ellipse(ImageDraw.Draw(mask), x, y, rx, ry, 255)
    return mask


def _clip_paste(layer: Image.Image, texture: Image.Image, mask: Image.Image) -> None:
    """Paint `texture` onto `layer` only inside `mask`, leaving the layer's opacity alone."""
    box = mask.getbbox()
    if box is None:
        return
    texture = texture.crop(box)
    coverage = ImageChops.multiply(texture.getchannel("A"), mask.crop(box))
    layer.paste(texture.convert("RGB"), box[:2], coverage)


def _sample_in(mask: Image.Image, n: int, rng: np.random.Generator) -> list[Point]:
    """Up to n random points inside a mask (rejection sampling in its bounding box)."""
    box = mask.getbbox()
    if box is None:
        return []
    inside = np.asarray(mask) > 0
    xs = rng.uniform(box[0], box[2], 4 * n)
    ys = rng.uniform(box[1], box[3], 4 * n)
    keep = inside[ys.astype(int), xs.astype(int)]
    return list(zip(xs[keep][:n].tolist(), ys[keep][:n].tolist(), strict=True))
