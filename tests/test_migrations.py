"""Alembic migrations run up and down on both databases and match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import app.models  # noqa: F401  (registers the tables)
from app.config import Settings
from app.db import get_engine
from app.services import migrations


def _tables(url: str) -> set[str]:
    return set(inspect(get_engine(url)).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(settings: Settings) -> None:
    url = settings.db_url
    migrations.upgrade(url)
    assert migrations.current_revision(url) == migrations.head_revision(url)
    assert _tables(url) == set(SQLModel.metadata.tables)

    migrations.downgrade(url, "base")
    assert migrations.current_revision(url) is None
    assert _tables(url) == set()

    migrations.upgrade(url)  # and back again: downgrade left nothing behind
    assert _tables(url) == set(SQLModel.metadata.tables)


def test_models_and_migrations_agree(settings: Settings) -> None:
    """A model change without a migration fails here, on both backends."""
    migrations.upgrade(settings.db_url)
    with get_engine(settings.db_url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []
