"""The data model: SQLModel tables shared by the web app and the workers.

Enumerations are stored as short strings (not database enum types) so that adding a value is
a code change, not a migration, and the schema stays identical on PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# Named constraints let Alembic's batch mode alter SQLite tables and downgrade cleanly.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone on read)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use app.models.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=UTCDateTime, nullable=True, index=index)
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=index)


def _json(*, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=sa.JSON, nullable=True)
    return Field(default_factory=dict, sa_type=sa.JSON, nullable=False)


class Role(StrEnum):
    admin = "admin"
    curator = "curator"
    viewer = "viewer"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class ImageSource(StrEnum):
    inat = "inat"
    import_ = "import"
    upload = "upload"


class DownloadState(StrEnum):
    pending = "pending"
    done = "done"
    failed = "failed"
    # Same bytes as another image already stored (its id is in download_error's text).
    duplicate = "duplicate"


class ReviewState(StrEnum):
    unreviewed = "unreviewed"
    kept = "kept"
    excluded = "excluded"


class Split(StrEnum):
    train = "train"
    val = "val"
    test = "test"


# --- people -------------------------------------------------------------------------------


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    role: str = Field(default=Role.viewer, max_length=16)
    is_active: bool = Field(default=True)
    created_at: datetime = _ts()
    last_login_at: datetime | None = _ts(nullable=True)


class ApiToken(SQLModel, table=True):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = _ts()
    last_used_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


# --- images and curation --------------------------------------------------------------------


class Species(SQLModel, table=True):
    __tablename__ = "species"

    id: int | None = Field(default=None, primary_key=True)
    scientific_name: str = Field(max_length=255, unique=True, index=True)
    common_name: str | None = Field(default=None, max_length=255)
    inat_taxon_id: int | None = Field(default=None, unique=True)
    rank: str | None = Field(default=None, max_length=32)
    ancestry: str | None = Field(default=None, max_length=1024)
    created_at: datetime = _ts()


class CurationRun(SQLModel, table=True):
    """One pass of feature extraction + DBSCAN over some species."""

    __tablename__ = "curation_runs"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, foreign_key="jobs.id", index=True)
    extractor: str = Field(max_length=64)
    params: dict[str, Any] = _json()
    stats: dict[str, Any] = _json()
    created_at: datetime = _ts()


class Image(SQLModel, table=True):
    __tablename__ = "images"
    __table_args__ = (sa.UniqueConstraint("source", "source_ref", name="uq_images_source_ref"),)

    id: int | None = Field(default=None, primary_key=True)
    species_id: int = Field(foreign_key="species.id", index=True)
    source: str = Field(max_length=16)
    source_ref: str = Field(max_length=512)
    source_url: str | None = Field(default=None, max_length=1024)
    observation_id: int | None = Field(default=None, index=True)
    observer_id: int | None = Field(default=None)
    license: str | None = Field(default=None, max_length=64)
    attribution: str | None = Field(default=None, max_length=512)
    # Relative to the data directory; never an absolute path.
    path: str | None = Field(default=None, max_length=1024)
    sha256: str | None = Field(default=None, max_length=64, index=True)
    phash: str | None = Field(default=None, max_length=32)
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    download_state: str = Field(default=DownloadState.pending, max_length=16, index=True)
    download_error: str | None = Field(default=None, max_length=512)
    download_attempts: int = Field(default=0)
    curation_run_id: int | None = Field(default=None, foreign_key="curation_runs.id")
    cluster_label: int | None = None
    anomaly_score: float | None = None
    flagged: bool = Field(default=False, index=True)
    review_state: str = Field(default=ReviewState.unreviewed, max_length=16, index=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ReviewEvent(SQLModel, table=True):
    """A human keep/exclude/undo decision; an image's review state is derived from these."""

    __tablename__ = "review_events"

    id: int | None = Field(default=None, primary_key=True)
    image_id: int = Field(foreign_key="images.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id")
    decision: str = Field(max_length=16)
    previous_state: str = Field(max_length=16)
    curation_run_id: int | None = Field(default=None, foreign_key="curation_runs.id")
    created_at: datetime = _ts()


class DatasetVersion(SQLModel, table=True):
    __tablename__ = "dataset_versions"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    policy: dict[str, Any] = _json()
    seed: int = 0
    stats: dict[str, Any] = _json()
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = _ts()


class DatasetItem(SQLModel, table=True):
    __tablename__ = "dataset_items"
    __table_args__ = (
        sa.UniqueConstraint("dataset_version_id", "image_id", name="uq_dataset_items_image"),
    )

    id: int | None = Field(default=None, primary_key=True)
    dataset_version_id: int = Field(
        foreign_key="dataset_versions.id", index=True, ondelete="CASCADE"
    )
    image_id: int = Field(foreign_key="images.id", index=True)
    species_id: int = Field(foreign_key="species.id")
    split: str = Field(max_length=8)
    class_index: int


# --- jobs and workers ----------------------------------------------------------------------


class Job(SQLModel, table=True):
    __tablename__ = "jobs"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32, index=True)
    queue: str = Field(max_length=64)
    params: dict[str, Any] = _json()
    status: str = Field(default=JobStatus.queued, max_length=16, index=True)
    celery_task_id: str | None = Field(default=None, max_length=64)
    worker_name: str | None = Field(default=None, max_length=255)
    worker_host: str | None = Field(default=None, max_length=255)
    worker_pid: int | None = None
    progress: float | None = None
    progress_text: str | None = Field(default=None, max_length=255)
    result: dict[str, Any] | None = _json(nullable=True)
    error: str | None = Field(default=None, sa_type=sa.Text)
    cancel_requested: bool = Field(default=False)
    resumed_from_id: int | None = Field(default=None, foreign_key="jobs.id")
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = _ts(index=True)
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()


class JobEvent(SQLModel, table=True):
    """Append-only job history (status changes, progress, log lines); what SSE streams."""

    __tablename__ = "job_events"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=16)
    level: str = Field(default="info", max_length=16)
    message: str = Field(default="", sa_type=sa.Text)
    data: dict[str, Any] = _json()
    created_at: datetime = _ts()


class JobMetric(SQLModel, table=True):
    """Training metrics, written in batches by a Keras callback."""

    __tablename__ = "job_metrics"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True, ondelete="CASCADE")
    phase: int = 0
    epoch: int = 0
    step: int | None = None
    values: dict[str, Any] = _json()
    created_at: datetime = _ts()


class Worker(SQLModel, table=True):
    __tablename__ = "workers"

    id: int | None = Field(default=None, primary_key=True)
    # Celery node name (e.g. `gpu@lab-3`): unique per worker process tree.
    name: str = Field(max_length=255, unique=True, index=True)
    hostname: str = Field(max_length=255)
    pid: int
    queues: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    version: str = Field(default="", max_length=32)
    started_at: datetime = _ts()
    last_heartbeat: datetime = _ts(index=True)
    stopped_at: datetime | None = _ts(nullable=True)
    gpu_snapshot: dict[str, Any] | None = _json(nullable=True)


class GpuSample(SQLModel, table=True):
    __tablename__ = "gpu_samples"

    id: int | None = Field(default=None, primary_key=True)
    worker_name: str = Field(max_length=255, index=True)
    job_id: int | None = Field(default=None, foreign_key="jobs.id", index=True)
    gpu_index: int
    gpu_uuid: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=128)
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    utilization: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    processes: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    created_at: datetime = _ts(index=True)


# --- models --------------------------------------------------------------------------------


class TrainedModel(SQLModel, table=True):
    __tablename__ = "trained_models"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    job_id: int | None = Field(default=None, foreign_key="jobs.id")
    dataset_version_id: int = Field(foreign_key="dataset_versions.id", index=True)
    backbone: str = Field(max_length=64)
    input_size: int
    labels: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    preprocessing: dict[str, Any] = _json()
    metrics: dict[str, Any] = _json()
    path: str = Field(max_length=1024)
    size_bytes: int | None = None
    created_at: datetime = _ts()


class ModelExport(SQLModel, table=True):
    """One TFLite file made from a TrainedModel, with what the LiteRT interpreter measured."""

    __tablename__ = "model_exports"

    id: int | None = Field(default=None, primary_key=True)
    trained_model_id: int = Field(foreign_key="trained_models.id", index=True)
    job_id: int | None = Field(default=None, foreign_key="jobs.id")
    # float32 | float16 | dynamic | int8
    quantization: str = Field(max_length=16)
    # The interpreter's input/output tensor dtypes (int8 exports may take uint8 or float32).
    input_dtype: str = Field(default="float32", max_length=16)
    output_dtype: str = Field(default="float32", max_length=16)
    # Both relative to the data directory.
    path: str = Field(max_length=1024)
    bundle_path: str | None = Field(default=None, max_length=1024)
    size_bytes: int | None = None
    test_images: int | None = None
    # Share of test images whose top-1 equals the Keras model's top-1.
    top1_agreement: float | None = None
    accuracy: float | None = None
    top5_accuracy: float | None = None
    # Single-image latency on one CPU thread, mean and 95th percentile.
    latency_ms: float | None = None
    latency_p95_ms: float | None = None
    details: dict[str, Any] = _json()
    created_at: datetime = _ts()


# --- iNaturalist open-data staging ---------------------------------------------------------
# Rows of the iNaturalist open-data dump, limited to the chosen taxa subtree. Each ingest
# (app/services/inat/ingest.py) replaces these four tables wholesale; types follow the dump's own
# schema, with ids as BIGINT so that no id in a future dump overflows. Selection
# (app/services/inat/select.py) turns them into `species` and pending `images` rows.


class InatTaxon(SQLModel, table=True):
    __tablename__ = "inat_taxa"

    taxon_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    # Root-to-parent chain of taxon ids joined by '/'.
    ancestry: str | None = Field(default=None, sa_type=sa.Text)
    rank_level: float | None = None
    rank: str | None = Field(default=None, max_length=32)
    name: str = Field(sa_type=sa.Text, index=True)
    active: bool


class InatObservation(SQLModel, table=True):
    __tablename__ = "inat_observations"

    observation_uuid: str = Field(primary_key=True, max_length=36)
    observer_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    latitude: float | None = None
    longitude: float | None = None
    positional_accuracy: int | None = None
    taxon_id: int | None = Field(default=None, sa_type=sa.BigInteger, index=True)
    quality_grade: str | None = Field(default=None, max_length=32)
    observed_on: date | None = None
    anomaly_score: float | None = None


class InatPhoto(SQLModel, table=True):
    __tablename__ = "inat_photos"

    # Observation first: the key doubles as the index that joins photos to observations.
    observation_uuid: str = Field(primary_key=True, max_length=36)
    photo_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    photo_uuid: str = Field(max_length=36)
    observer_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    extension: str | None = Field(default=None, max_length=16)
    license: str | None = Field(default=None, max_length=32)
    width: int | None = None
    height: int | None = None
    position: int | None = None


class InatObserver(SQLModel, table=True):
    __tablename__ = "inat_observers"

    observer_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    login: str | None = Field(default=None, sa_type=sa.Text)
    name: str | None = Field(default=None, sa_type=sa.Text)


class InatObservationKey(SQLModel, table=True):
    """A stable integer per iNaturalist observation: what `Image.observation_id` holds.

    The dump names observations by UUID only; selection gives each observation it uses a row
    here. Ingest never touches this table, so the numbers survive re-ingesting a newer dump.
    """

    __tablename__ = "inat_observation_keys"

    id: int | None = Field(default=None, primary_key=True)
    observation_uuid: str = Field(max_length=36, unique=True, index=True)


# --- curation feature cache ----------------------------------------------------------------
# One feature vector per (image, extractor key such as `colour-texture@1`), so re-running
# curation only extracts features for new photos. The vector is float32, little-endian bytes.


class ImageFeature(SQLModel, table=True):
    __tablename__ = "image_features"
    __table_args__ = (
        sa.UniqueConstraint("image_id", "extractor", name="uq_image_features_image_extractor"),
    )

    id: int | None = Field(default=None, primary_key=True)
    image_id: int = Field(foreign_key="images.id", index=True, ondelete="CASCADE")
    extractor: str = Field(max_length=64)
    dims: int
    vector: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = _ts()
