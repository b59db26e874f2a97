"""The synthetic demo dataset: layout, manifest, determinism, anomalies, learnability."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.services.demo_data import (
    ANOMALY_KINDS,
    DEMO_SPECIES,
    DemoImage,
    DemoManifest,
    generate_demo_dataset,
    read_manifest,
)

PER_SPECIES = 24
SIZE = 96
FRACTION = 0.1


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    """All species, enough images to train on, a generous share of anomalies."""
    root = tmp_path_factory.mktemp("demo") / "dataset"
    return generate_demo_dataset(
        root, per_species=PER_SPECIES, anomaly_fraction=FRACTION, image_size=SIZE, seed=7
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _features(path: Path) -> np.ndarray:
    """A tiny thumbnail plus per-channel colour histograms of the middle of the frame, where
    photographers put the subject (the surroundings vary with the scene, not the species)."""
    image = Image.open(path).convert("RGB")
    side = image.width
    image = image.crop((side // 5, side // 5, side - side // 5, side - side // 5))
    thumb = np.asarray(image.resize((8, 8), Image.Resampling.BOX), dtype=np.float64) / 255
    pixels = np.asarray(image).reshape(-1, 3)
    hist = [np.histogram(pixels[:, c], bins=8, range=(0, 256))[0] / len(pixels) for c in range(3)]
    return np.concatenate([thumb.ravel(), 4 * np.concatenate(hist)])


def test_species_table_is_varied() -> None:
    names = [species.name for species in DEMO_SPECIES]
    assert len(DEMO_SPECIES) >= 6
    assert len(set(names)) == len(names)
    assert all(species.folder == species.name.replace(" ", "_") for species in DEMO_SPECIES)
    assert len({species.cap_shape for species in DEMO_SPECIES}) >= 5
    assert len({species.texture for species in DEMO_SPECIES}) >= 5
    assert len({species.cap_rgb for species in DEMO_SPECIES}) == len(DEMO_SPECIES)


def test_files_on_disk_match_the_manifest(dataset: DemoManifest) -> None:
    assert read_manifest(dataset.root) == dataset
    on_disk = {p for p in _files(dataset.root) if p != "manifest.csv"}
    assert on_disk == {image.path for image in dataset.images}  # and no temporary files left
    assert dataset.species == tuple(sorted(species.name for species in DEMO_SPECIES))
    per_species = Counter(image.species for image in dataset.images)
    assert set(per_species.values()) == {PER_SPECIES}
    for image in dataset.images:
        folder, name = image.path.split("/")
        assert folder == image.species.replace(" ", "_")
        assert name.endswith(".jpg")
    with (dataset.root / "manifest.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["path", "species", "observation_id", "anomaly"]


def test_every_image_decodes_at_the_requested_size(dataset: DemoManifest) -> None:
    for image in dataset.images:
        with Image.open(dataset.path_of(image)) as decoded:
            assert decoded.format == "JPEG"
            assert decoded.mode == "RGB"
            assert decoded.size == (SIZE, SIZE)
            decoded.load()


def test_anomalies_are_planted_at_the_requested_rate(dataset: DemoManifest) -> None:
    total = len(dataset.images)
    anomalies = dataset.anomalies
    assert abs(len(anomalies) - FRACTION * total) <= 1
    assert {image.anomaly for image in anomalies} == set(ANOMALY_KINDS)
    assert len({image.species for image in anomalies}) == len(DEMO_SPECIES)  # spread out
    assert all(image.anomaly is None for image in dataset.images if image not in anomalies)


def test_observations_group_one_to_four_photos_of_one_species(dataset: DemoManifest) -> None:
    groups: dict[int, list[DemoImage]] = defaultdict(list)
    for image in dataset.images:
        assert isinstance(image.observation_id, int)
        groups[image.observation_id].append(image)
    sizes = Counter(len(members) for members in groups.values())
    assert set(sizes) <= {1, 2, 3, 4}
    assert sizes[1] < len(groups)  # most observations hold several photos
    for members in groups.values():
        assert len({image.species for image in members}) == 1
    per_species = Counter(members[0].species for members in groups.values())
    assert min(per_species.values()) >= PER_SPECIES // 4


def test_species_are_separable_but_photos_vary(dataset: DemoManifest) -> None:
    normal = [image for image in dataset.images if image.anomaly is None]
    train, test = [], []
    for species in dataset.species:
        # Split by observation, so the test photos show specimens never seen in training.
        ids = sorted({i.observation_id for i in normal if i.species == species})
        held_out = set(ids[1::2])
        for image in (i for i in normal if i.species == species):
            (test if image.observation_id in held_out else train).append(image)
    centroids = {
        species: np.mean(
            [_features(dataset.path_of(i)) for i in train if i.species == species], axis=0
        )
        for species in dataset.species
    }
    names = list(centroids)
    matrix = np.stack([centroids[name] for name in names])
    hits = [
        names[int(np.argmin(np.linalg.norm(matrix - _features(dataset.path_of(i)), axis=1)))]
        == i.species
        for i in test
    ]
    assert np.mean(hits) >= 0.6, f"nearest-centroid accuracy {np.mean(hits):.2f}"

    for species in dataset.species:
        first, second = [i for i in normal if i.species == species][:2]
        a = np.asarray(Image.open(dataset.path_of(first)), dtype=np.float64)
        b = np.asarray(Image.open(dataset.path_of(second)), dtype=np.float64)
        assert np.std(a - b) > 3, species
        assert np.std(a) > 10, species  # textured, not one flat colour


def test_anomalies_stand_out_from_their_species(dataset: DemoManifest) -> None:
    features = {image.path: _features(dataset.path_of(image)) for image in dataset.images}
    centroids = {
        species: np.mean(
            [features[i.path] for i in dataset.images if i.species == species and not i.anomaly],
            axis=0,
        )
        for species in dataset.species
    }

    def distance(image: DemoImage) -> float:
        return float(np.linalg.norm(features[image.path] - centroids[image.species]))

    normal = np.mean([distance(i) for i in dataset.images if i.anomaly is None])
    for kind in ("microscopy", "scenery"):
        odd = [distance(i) for i in dataset.anomalies if i.anomaly == kind]
        assert odd and np.mean(odd) > 1.5 * normal, kind


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    options = {"species_count": 3, "per_species": 5, "image_size": 64, "anomaly_fraction": 0.2}
    first = generate_demo_dataset(tmp_path / "a", seed=3, **options)
    second = generate_demo_dataset(tmp_path / "b", seed=3, **options)
    generate_demo_dataset(tmp_path / "c", seed=4, **options)
    assert first.images == second.images
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    a, c = _files(tmp_path / "a"), _files(tmp_path / "c")
    shared = set(a) & set(c) - {"manifest.csv"}
    assert sum(a[p] != c[p] for p in shared) == len(shared) == 15


def test_images_do_not_depend_on_what_else_is_generated(tmp_path: Path) -> None:
    small = generate_demo_dataset(
        tmp_path / "two", species_count=2, per_species=4, image_size=48, anomaly_fraction=0
    )
    large = generate_demo_dataset(
        tmp_path / "three", species_count=3, per_species=4, image_size=48, anomaly_fraction=0
    )
    for image in small.images:
        assert small.path_of(image).read_bytes() == large.path_of(image).read_bytes()


def test_progress_counts_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_demo_dataset(
        tmp_path / "d",
        species_count=2,
        per_species=3,
        image_size=32,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(done, 6) for done in range(7)]


@pytest.mark.parametrize(
    "options",
    [
        {"per_species": 0},
        {"species_count": 0},
        {"species_count": len(DEMO_SPECIES) + 1},
        {"anomaly_fraction": -0.01},
        {"anomaly_fraction": 0.5},
        {"image_size": 31},
        {"image_size": 1025},
        {"seed": -1},
        {"per_species": 2.5},
        {"image_size": True},
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path / "x", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_refuses_a_folder_that_is_not_a_demo_dataset(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_demo_dataset(tmp_path, species_count=1, per_species=1, image_size=32)
    assert _files(tmp_path) == {"holiday.jpg": b"precious"}
    with pytest.raises(FileExistsError):
        generate_demo_dataset(tmp_path / "holiday.jpg", species_count=1, per_species=1)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "manifest.csv").write_text("file,label\na.jpg,cat\n")
    with pytest.raises(FileExistsError, match="not ours"):
        generate_demo_dataset(theirs, species_count=1, per_species=1, image_size=32)
    assert _files(theirs) == {"manifest.csv": b"file,label\na.jpg,cat\n"}


def test_regenerating_replaces_a_previous_dataset(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    root.mkdir()  # an empty folder is fine too
    generate_demo_dataset(root, species_count=2, per_species=4, image_size=32)
    (root / "notes.txt").write_text("mine")
    smaller = generate_demo_dataset(root, species_count=1, per_species=2, image_size=32)
    expected = {image.path for image in smaller.images} | {"manifest.csv", "notes.txt"}
    assert set(_files(root)) == expected
    assert not (root / DEMO_SPECIES[1].folder).exists()
    assert read_manifest(root) == smaller


def test_read_manifest_rejects_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,species\nA/0000.jpg,A\n")
    with pytest.raises(ValueError, match="columns"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text(
        "path,species,observation_id,anomaly\nA/0000.jpg,A,1,gremlin\n"
    )
    with pytest.raises(ValueError, match="gremlin"):
        read_manifest(tmp_path)
