"""Settings, read from the environment and an optional `.env` file.

With nothing configured Sporeprint runs in single-machine mode: an SQLite database and a
SQLite-backed Celery broker, both inside the data directory. Setting `DATABASE_URL` and
`CELERY_BROKER_URL` switches to server mode (PostgreSQL + Redis) without any other change.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_KEY_FILE = "secret_key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPOREPRINT_",
        env_file=".env",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    data_dir: Path = Field(
        default=Path("data"), description="Where images, models, the SQLite files and logs live."
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "SPOREPRINT_DATABASE_URL"),
        description="SQLAlchemy URL; unset means an SQLite file in the data directory.",
    )
    celery_broker_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CELERY_BROKER_URL", "SPOREPRINT_CELERY_BROKER_URL"),
        description="Celery broker; unset means kombu's SQLAlchemy transport on an SQLite file.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Signs session cookies; unset means one generated once into the data dir.",
    )
    host: str = Field(default="127.0.0.1", description="Address the web server binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the web server binds to.")
    weights_dir: Path | None = Field(
        default=None, description="Pretrained backbone weights for offline machines."
    )
    admin_password: str | None = Field(
        default=None, description="Password for the admin created on first start."
    )
    heartbeat_interval: float = Field(
        default=5.0, gt=0, description="Seconds between worker heartbeats."
    )
    worker_timeout: float = Field(
        default=30.0, gt=0, description="Heartbeat age after which a worker counts as dead."
    )
    session_max_age: int = Field(
        default=14 * 24 * 3600, gt=0, description="Seconds a login session stays valid."
    )
    gpu_provider: Literal["auto", "nvml", "nvidia-smi", "none"] = Field(
        default="auto", description="How workers read their GPUs: NVML, then nvidia-smi."
    )
    gpu_sample_interval: float = Field(
        default=2.0, gt=0, description="Seconds between GPU readings a training job records."
    )
    orphan_after: float = Field(
        default=300.0, gt=0, description="Seconds a GPU process no job owns may hold memory."
    )
    end_process_grace: float = Field(
        default=10.0, gt=0, description="Seconds between SIGTERM and SIGKILL when ending one."
    )
    inat_photo_base_url: str = Field(
        default="https://inaturalist-open-data.s3.amazonaws.com",
        description="Where iNaturalist open-data photos live: <base>/photos/<id>/<size>.<ext>.",
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Largest zip of photos one upload may send."
    )
    max_try_bytes: int = Field(
        default=20 * 1024**2, gt=0, description="Largest photo Try it takes (read in memory)."
    )
    max_zip_entries: int = Field(
        default=100_000, gt=0, description="Most files and folders an imported zip may hold."
    )
    max_zip_bytes: int = Field(
        default=8 * 1024**3, gt=0, description="Most bytes an imported zip may unpack to."
    )
    target_images_per_species: int = Field(
        default=200, gt=0, description="Usable photos per species the Species page aims for."
    )
    download_concurrency: int = Field(
        default=32, ge=1, le=1024, description="Photos downloaded at once by one download job."
    )
    download_per_host: int = Field(
        default=16, ge=1, le=1024, description="Photos downloaded at once from any one host."
    )
    download_max_attempts: int = Field(
        default=4, ge=1, le=20, description="Tries per photo and run before it counts as failed."
    )
    download_timeout: float = Field(
        default=30.0, gt=0, description="Seconds one photo request may stall before a retry."
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Child processes (workers) may start in another cwd; pin the path now.
        return value.expanduser().resolve()

    @property
    def single_machine(self) -> bool:
        return self.database_url is None and self.celery_broker_url is None

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sporeprint.db'}"

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def weights_path(self) -> Path:
        return (self.weights_dir or self.data_dir / "weights").expanduser().resolve()

    def session_secret(self) -> str:
        """The cookie-signing key: configured, or created once and kept in the data dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / SECRET_KEY_FILE
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
