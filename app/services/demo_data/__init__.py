"""Synthetic demo dataset: procedurally drawn wild-mushroom photos in `species/image.jpg` layout.

The product offers it on first run, and tests train classifiers and score curation on it. Each
species differs in cap shape, colour, texture and stem; each photo varies in pose, framing,
background and lighting; a few planted anomalies (fingers, people, micrographs, landscapes, far
too small subjects) sit in species folders like real mislabelled uploads. Every image draws from
its own generator keyed by (seed, species, image), so a seed always yields byte-identical files.
"""

from app.services.demo_data.anomalies import ANOMALY_KINDS
from app.services.demo_data.dataset import (
    MANIFEST_NAME,
    DemoImage,
    DemoManifest,
    generate_demo_dataset,
    read_manifest,
)
from app.services.demo_data.species import DEMO_SPECIES, DemoSpecies

__all__ = [
    "ANOMALY_KINDS",
    "DEMO_SPECIES",
    "MANIFEST_NAME",
    "DemoImage",
    "DemoManifest",
    "DemoSpecies",
    "generate_demo_dataset",
    "read_manifest",
]
