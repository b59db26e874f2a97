"""Planning a generation: which species, observation and anomaly each image gets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.services.demo_data.anomalies import ANOMALY_KINDS

# Distinct salts keep the generators for plans, observations and images from ever coinciding.
_SALT_PLAN, _SALT_ANOMALY, SALT_OBSERVATION, SALT_IMAGE = 11, 13, 17, 19
_OBSERVATION_SIZES = (1, 2, 3, 4)
_OBSERVATION_WEIGHTS = (0.25, 0.35, 0.25, 0.15)


@dataclass(frozen=True)
class Job:
    species_index: int
    image_index: int  # within the species
    observation_index: int  # within the species: keys the specimen's generator
    observation_id: int  # unique across the dataset
    anomaly: str | None


def plan(species_count: int, per_species: int, anomaly_fraction: float, seed: int) -> list[Job]:
    anomalies = _place_anomalies(species_count, per_species, anomaly_fraction, seed)
    jobs: list[Job] = []
    next_id = 1
    for s in range(species_count):
        image_index = 0
        sizes = _observation_sizes(np.random.default_rng([seed, s, _SALT_PLAN]), per_species)
        for local, size in enumerate(sizes):
            for _ in range(size):
                anomaly = anomalies.get((s, image_index))
                jobs.append(Job(s, image_index, local, next_id, anomaly))
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
    """Pick (species, image) slots for anomalies. Kinds and species are both dealt round-robin
    (from shuffled orders), so every kind appears once there are five and all are spread out."""
    count = round(fraction * species_count * per_species)
    if count == 0:
        return {}
    rng = np.random.default_rng([seed, _SALT_ANOMALY])
    deck = rng.permutation(len(ANOMALY_KINDS))
    kinds = [ANOMALY_KINDS[deck[i % len(deck)]] for i in range(count)]
    rng.shuffle(kinds)
    order = rng.permutation(species_count)
    per = np.bincount(order[np.arange(count) % species_count], minlength=species_count)
    slots = [
        (s, int(i))
        for s in range(species_count)
        for i in sorted(rng.choice(per_species, size=int(per[s]), replace=False))
    ]
    return dict(zip(slots, kinds, strict=True))
