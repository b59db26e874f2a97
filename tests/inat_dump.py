"""A small synthetic iNaturalist open-data dump, written the way the real one is.

Tab-separated, a header row, no quoting (quotes in names are data), optionally gzipped. The
default scenario has fungi under Basidiomycota and Ascomycota, plants and a chytrid outside
that subtree, names with single and double quotes, an inactive species, a variety that rolls up
into its species, non-research grades and observations with many photos under mixed licences.
"""

from __future__ import annotations

import gzip
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HEADERS = {
    "taxa": ["taxon_id", "ancestry", "rank_level", "rank", "name", "active"],
    "observations": [
        "observation_uuid", "observer_id", "latitude", "longitude", "positional_accuracy",
        "taxon_id", "quality_grade", "observed_on", "anomaly_score",
    ],
    "photos": [
        "photo_uuid", "photo_id", "observation_uuid", "observer_id", "extension", "license",
        "width", "height", "position",
    ],
    "observers": ["observer_id", "login", "name"],
}  # fmt: skip
RANK_LEVELS = {"stateofmatter": 100, "kingdom": 70, "phylum": 60, "genus": 20, "species": 10}
LICENSE_CYCLE = ["CC-BY-NC", "CC-BY", "CC0", "CC-BY-ND", "CC-BY-NC-SA", "CC-BY-SA", "CC-BY-NC-ND"]

# Taxon ids of the default scenario.
LIFE, FUNGI, BASIDIO, ASCO, CHYTRID, PLANTAE = 48460, 47170, 47169, 48250, 50000, 47126
AMANITA, BOLETUS, CORTINARIUS, RUSSULA, MORCHELLA, XYLARIA = (
    47347,
    47348,
    47349,
    47350,
    48300,
    48301,
)
MUSCARIA, GUESSOWII, EDULIS, CORT_IN01, RUSSULA_NY02 = 1001, 1101, 1002, 1003, 1004
ESCULENTA, HYPOXYLON, OLDNAME, DELICIOSUS, CHYTRID_SP, QUERCUS = 1005, 1006, 1007, 1008, 3001, 2001
CORT_NAME = "Cortinarius sp. 'IN01'"
RUSSULA_NAME = 'Russula "sp-NY02"'


@dataclass
class Taxon:
    taxon_id: int
    ancestry: str
    rank: str
    name: str
    active: bool = True


@dataclass
class Observation:
    uuid: str
    observer_id: int
    taxon_id: int
    quality_grade: str = "research"


@dataclass
class Photo:
    photo_id: int
    observation_uuid: str
    observer_id: int
    license: str
    position: int
    extension: str = "jpg"
    uuid: str = ""


@dataclass
class Dump:
    taxa: dict[int, Taxon] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    photos: list[Photo] = field(default_factory=list)
    observers: dict[int, tuple[str, str]] = field(default_factory=dict)  # id → (login, name)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    next_photo: int = 5_000_000

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def taxon(self, taxon_id: int, parent: int | None, rank: str, name: str, active=True) -> None:
        ancestry = ""
        if parent is not None:
            up = self.taxa[parent]
            ancestry = f"{up.ancestry}/{parent}" if up.ancestry else str(parent)
        self.taxa[taxon_id] = Taxon(taxon_id, ancestry, rank, name, active)

    def observe(
        self, taxon_id: int, photos: int, *, grade: str = "research", observer: int = 1,
        licenses: list[str] | None = None,
    ) -> Observation:  # fmt: skip
        obs = Observation(self._uuid(), observer, taxon_id, grade)
        self.observations.append(obs)
        for position in range(photos):
            cycle = licenses or LICENSE_CYCLE
            license = cycle[(len(self.photos) + position) % len(cycle)]
            self.next_photo += 1
            self.photos.append(
                Photo(self.next_photo, obs.uuid, observer, license, position, uuid=self._uuid())
            )
        return obs

    # --- what the rules keep -------------------------------------------------------------

    def in_subtree(self, taxon_id: int, roots: set[int]) -> bool:
        taxon = self.taxa.get(taxon_id)
        if taxon is None:
            return False
        chain = {int(a) for a in taxon.ancestry.split("/") if a}
        return taxon_id in roots or bool(chain & roots)

    def kept(self, roots: set[int]) -> dict[str, int]:
        taxa = [t for t in self.taxa.values() if self.in_subtree(t.taxon_id, roots)]
        obs = [o for o in self.observations if self.in_subtree(o.taxon_id, roots)]
        uuids = {o.uuid for o in obs}
        photos = [p for p in self.photos if p.observation_uuid in uuids]
        people = {o.observer_id for o in obs}
        return {
            "taxa": len(taxa), "observations": len(obs), "photos": len(photos),
            "observers": len(people & set(self.observers)),
        }  # fmt: skip

    # --- writing -------------------------------------------------------------------------

    def rows(self, kind: str) -> list[list[str]]:
        if kind == "taxa":
            return [
                [str(t.taxon_id), t.ancestry, str(RANK_LEVELS.get(t.rank, 5)), t.rank, t.name,
                 "true" if t.active else "false"]
                for t in self.taxa.values()
            ]  # fmt: skip
        if kind == "observations":
            return [
                [o.uuid, str(o.observer_id), f"{45 + i % 7 * 0.1:.4f}", f"{-73.5 - i % 5:.4f}",
                 str(10 + i % 30) if i % 4 else "", str(o.taxon_id), o.quality_grade,
                 f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}", ""]
                for i, o in enumerate(self.observations)
            ]  # fmt: skip
        if kind == "photos":
            return [
                [p.uuid, str(p.photo_id), p.observation_uuid, str(p.observer_id), p.extension,
                 p.license, "2048", "1536", str(p.position)]
                for p in self.photos
            ]  # fmt: skip
        return [[str(i), login, name] for i, (login, name) in self.observers.items()]

    def write(self, folder: Path, gzipped: tuple[str, ...] = ("photos",)) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for kind, header in HEADERS.items():
            text = "\n".join("\t".join(r) for r in [header, *self.rows(kind)]) + "\n"
            if kind in gzipped:
                (folder / f"{kind}.csv.gz").write_bytes(gzip.compress(text.encode()))
            else:
                (folder / f"{kind}.csv").write_text(text, encoding="utf-8")
        return folder


def fungi_dump() -> Dump:
    """The default scenario (a few hundred rows)."""
    d = Dump()
    d.taxon(LIFE, None, "stateofmatter", "Life")
    d.taxon(FUNGI, LIFE, "kingdom", "Fungi")
    d.taxon(PLANTAE, LIFE, "kingdom", "Plantae")
    d.taxon(BASIDIO, FUNGI, "phylum", "Basidiomycota")
    d.taxon(ASCO, FUNGI, "phylum", "Ascomycota")
    d.taxon(CHYTRID, FUNGI, "phylum", "Chytridiomycota")
    for genus, phylum, name in [
        (AMANITA, BASIDIO, "Amanita"), (BOLETUS, BASIDIO, "Boletus"),
        (CORTINARIUS, BASIDIO, "Cortinarius"), (RUSSULA, BASIDIO, "Russula"),
        (MORCHELLA, ASCO, "Morchella"), (XYLARIA, ASCO, "Xylaria"),
    ]:  # fmt: skip
        d.taxon(genus, phylum, "genus", name)
    d.taxon(MUSCARIA, AMANITA, "species", "Amanita muscaria")
    d.taxon(GUESSOWII, MUSCARIA, "variety", "Amanita muscaria guessowii")
    d.taxon(EDULIS, BOLETUS, "species", "Boletus edulis")
    d.taxon(CORT_IN01, CORTINARIUS, "species", CORT_NAME)
    d.taxon(RUSSULA_NY02, RUSSULA, "species", RUSSULA_NAME)
    d.taxon(OLDNAME, AMANITA, "species", "Amanita oldname", active=False)
    d.taxon(DELICIOSUS, RUSSULA, "species", "Lactarius deliciosus")
    d.taxon(ESCULENTA, MORCHELLA, "species", "Morchella esculenta")
    d.taxon(HYPOXYLON, XYLARIA, "species", "Xylaria hypoxylon")
    d.taxon(CHYTRID_SP, CHYTRID, "species", "Batrachochytrium dendrobatidis")
    d.taxon(QUERCUS, PLANTAE, "species", "Quercus robur")

    d.observers = {
        1: ("obrien", "Seán O'Brien"),
        2: ("jdoe", 'Jane "Mycena" Doe'),
        3: ("login_only", ""),
        4: ("fourth", "Fourth Person"),
        5: ("plants_only", "Plant Person"),
        6: ("unused", "Never Observed"),
    }
    # Amanita muscaria: 12 observations x 4 photos, mixed licences; its variety adds 6 more.
    for i in range(12):
        d.observe(MUSCARIA, 4, observer=1 + i % 3)
    for _ in range(6):
        d.observe(GUESSOWII, 2, observer=2, licenses=["CC-BY"])
    # Boletus edulis: 5 observations x 3 photos, all CC-BY: 2 per observation → 10 eligible.
    for _ in range(5):
        d.observe(EDULIS, 3, observer=4, licenses=["CC-BY"])
    d.observe(EDULIS, 3, grade="needs_id", observer=4, licenses=["CC-BY"])
    d.observe(EDULIS, 2, grade="casual", observer=4, licenses=["CC-BY"])
    # Quoted names, an inactive species, a species with no research-grade photo.
    for _ in range(3):
        d.observe(CORT_IN01, 2, observer=2, licenses=["CC0"])
    for _ in range(4):
        d.observe(RUSSULA_NY02, 1, observer=3, licenses=["CC-BY-NC"])
    d.observe(OLDNAME, 3, observer=1, licenses=["CC-BY"])
    d.observe(DELICIOSUS, 3, grade="needs_id", observer=1, licenses=["CC-BY"])
    # Ascomycota.
    for i in range(7):
        d.observe(ESCULENTA, 5, observer=1 + i % 4)
    d.observe(HYPOXYLON, 2, observer=4, licenses=["CC-BY-ND"])
    # Genus-level observation: staged, never a species.
    d.observe(AMANITA, 2, observer=1, licenses=["CC-BY"])
    # Outside the subtree: plants and a chytrid.
    for _ in range(20):
        d.observe(QUERCUS, 3, observer=5, licenses=["CC-BY"])
    d.observe(CHYTRID_SP, 2, observer=5, licenses=["CC-BY"])
    return d
