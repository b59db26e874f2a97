"""Parameters of the iNaturalist jobs, shared by the job API and the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.services.inat.reader import find_dump

DEFAULT_ROOT_TAXA = ("Basidiomycota", "Ascomycota")
PhotoSize = Literal["original", "large", "medium", "small", "thumb", "square"]
QualityGrade = Literal["research", "needs_id", "casual"]
# The licences of the open dataset, in lower case (the dump writes them as CC-BY-NC …).
LICENSES = ("cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa", "cc-by-nd", "cc-by-nc-nd")
# Every licence that allows adapting the photo (cropping, resizing, augmenting for training):
# all but the NoDerivatives ones. NonCommercial is in, since most iNaturalist photos carry it;
# a model meant for a commercial product should narrow this to cc0, cc-by, cc-by-sa.
DEFAULT_LICENSES = ("cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa")


def _names(values: list[str], what: str) -> list[str]:
    """Trimmed, de-duplicated (first spelling wins), none empty."""
    out: list[str] = []
    for value in values:
        name = " ".join(value.split())
        if not name:
            raise ValueError(f"an empty {what}")
        if name not in out:
            out.append(name)
    return out


class InatIngestParams(BaseModel):
    """Load an iNaturalist open-data dump (taxa, observations, photos, observers) into staging."""

    model_config = ConfigDict(extra="forbid")

    directory: str = Field(
        description="Folder holding taxa.csv, observations.csv, photos.csv and observers.csv "
        "(each may be gzipped); as seen by the io workers."
    )
    root_taxa: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ROOT_TAXA),
        min_length=1,
        max_length=50,
        description="Keep only these taxa (by name, or taxon id) and everything under them.",
    )

    @field_validator("directory")
    @classmethod
    def _a_dump(cls, value: str) -> str:
        path = Path(value).expanduser()
        find_dump(path)  # DumpError (a ValueError) says what is missing
        return str(path.resolve())

    @field_validator("root_taxa")
    @classmethod
    def _root_names(cls, value: list[str]) -> list[str]:
        return _names(value, "root taxon name")


class InatSelectParams(BaseModel):
    """Choose species and photos from the staged dump; adds pending `images` rows."""

    model_config = ConfigDict(extra="forbid")

    species: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Scientific names to take; empty means the `top` species by photo count.",
    )
    top: int = Field(
        default=100, ge=1, le=10_000, description="How many species, when none are named."
    )
    per_species: int = Field(
        default=200, ge=1, le=100_000, description="Photos per species (in all, over reruns)."
    )
    per_observation: int = Field(
        default=2, ge=1, le=100, description="At most this many photos of one observation."
    )
    licenses: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LICENSES),
        min_length=1,
        description=f"Licences to accept, of {', '.join(LICENSES)}.",
    )
    photo_size: PhotoSize = Field(default="medium", description="Which size of each photo.")
    quality_grades: list[QualityGrade] = Field(
        default_factory=lambda: ["research"], min_length=1, description="Observation grades."
    )
    include_infraspecific: bool = Field(
        default=True,
        description="Count observations of a subspecies, variety or form as their species.",
    )

    @field_validator("species")
    @classmethod
    def _species_names(cls, value: list[str]) -> list[str]:
        return _names(value, "species name")

    @field_validator("licenses")
    @classmethod
    def _known_licenses(cls, value: list[str]) -> list[str]:
        wanted = _names([v.lower() for v in value], "licence")
        unknown = [v for v in wanted if v not in LICENSES]
        if unknown:
            raise ValueError(
                f"unknown licence(s) {', '.join(unknown)}; choose from {', '.join(LICENSES)}"
            )
        return wanted

    @field_validator("quality_grades")
    @classmethod
    def _unique_grades(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))
