"""Load an iNaturalist open-data dump into the `inat_*` staging tables.

Only the taxa subtree under the chosen root taxa is kept (default: Basidiomycota and Ascomycota,
looked up by name in taxa.csv), with the observations of those taxa, their photos and their
observers, so a full dump (hundreds of millions of photo rows) never lands on disk in full:

1. taxa.csv is read twice: once to find the root taxa (and check every line), once to keep the
   roots and every taxon whose ancestry passes through one;
2. observations.csv: rows whose taxon was kept; their UUIDs go into a compact key set;
3. photos.csv: rows of kept observations, filtered 64k rows at a time against that set;
4. observers.csv: the people behind the kept observations (on iNaturalist only an
   observation's owner adds its photos, so they are the photographers too).

All four loads are one transaction: a malformed line anywhere (reported with its file and line)
loads nothing and leaves the previous staging data as it was, and a successful ingest replaces
it wholesale. On PostgreSQL each file streams through `COPY … FROM STDIN` (psycopg2's
`copy_expert` reads the filtered rows from a generator, never the whole file), with the staging
tables' keys and indexes dropped for the load and rebuilt after it. On SQLite the rows go in
batches into connection-private temporary tables (which take no lock on the database, so the
web server and the job's own progress rows keep writing), then into the staging tables in one
short final transaction.
"""

from __future__ import annotations

import gc
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path
from re import Match
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex
from sqlmodel import SQLModel

from app.models import InatObservation, InatObserver, InatPhoto, InatTaxon
from app.services.inat.params import DEFAULT_ROOT_TAXA
from app.services.inat.reader import DumpError, TsvTable, find_dump

TABLES = {
    "taxa": InatTaxon.__tablename__,
    "observations": InatObservation.__tablename__,
    "photos": InatPhoto.__tablename__,
    "observers": InatObserver.__tablename__,
}
# The columns each filter reads (all others only need checking, on the way to COPY).
FILTER_COLUMNS = {
    "taxa": ("taxon_id", "ancestry"),
    "observations": ("observation_uuid", "observer_id", "taxon_id"),
    "photos": ("observation_uuid",),
    "observers": ("observer_id",),
}
COPY_CHUNK = 1 << 18  # what psycopg2 asks `read()` for (a whole batch comes back)
READ_SHARE = 0.95  # of the progress bar; the rest is rebuilding indexes / the final swap


@dataclass
class FileReport:
    file: str
    rows_read: int = 0
    rows_kept: int = 0
    seconds: float = 0.0  # reading, checking, filtering, loading
    finish_seconds: float = 0.0  # its table's key, indexes and statistics (PostgreSQL)
    sanitized: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"{self.file}: read {self.rows_read:,} rows, kept {self.rows_kept:,} "
            f"in {self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s)"
        )
        if self.sanitized:
            text += f"; control characters replaced on {self.sanitized:,} lines"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "rows_read": self.rows_read, "rows_kept": self.rows_kept,
            "seconds": round(self.seconds, 3), "rows_per_s": round(self.rows_per_s),
            "finish_seconds": round(self.finish_seconds, 3), "sanitized": self.sanitized,
        }  # fmt: skip


@dataclass
class IngestReport:
    directory: str
    root_taxa: dict[str, list[int]] = field(default_factory=dict)  # name → taxon ids
    files: dict[str, FileReport] = field(default_factory=dict)
    finish_seconds: float = 0.0  # rebuilding keys and indexes (PostgreSQL) / the swap (SQLite)
    seconds: float = 0.0

    def kept(self, kind: str) -> int:
        return self.files[kind].rows_kept if kind in self.files else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "root_taxa": self.root_taxa,
            "taxa": self.kept("taxa"),
            "observations": self.kept("observations"),
            "photos": self.kept("photos"),
            "observers": self.kept("observers"),
            "files": [f.as_dict() for f in self.files.values()],
            "finish_seconds": round(self.finish_seconds, 3),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class IngestProgress:
    """Where an ingest is: the file being read, its rows so far, the share of all the work."""

    stage: str  # a file name, or "indexes" / "saving"
    rows_read: int
    rows_kept: int
    rows_per_s: float
    fraction: float

    @property
    def text(self) -> str:
        if not self.rows_read:
            return self.stage
        return (
            f"{self.stage}: {self.rows_read:,} rows read, {self.rows_kept:,} kept "
            f"({self.rows_per_s:,.0f} rows/s)"
        )


ProgressFn = Callable[[IngestProgress], None]
LogFn = Callable[[str], None]


class _Tracker:
    """Turns file positions into one overall fraction and calls the caller's progress hook."""

    def __init__(self, total_bytes: int, progress: ProgressFn | None) -> None:
        self.total = max(total_bytes, 1)
        self.done = 0
        self.progress = progress
        self.report: FileReport | None = None
        self.started = 0.0

    def begin(self, report: FileReport) -> None:
        self.report, self.started = report, time.perf_counter()

    def tick(self, table: TsvTable) -> None:
        assert self.report is not None
        self.report.rows_read = table.line_no - 1
        if self.progress is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            fraction = READ_SHARE * (self.done + table.position()) / self.total
            self.progress(
                IngestProgress(
                    table.name, self.report.rows_read, self.report.rows_kept,
                    self.report.rows_read / elapsed, min(fraction, READ_SHARE),
                )
            )  # fmt: skip

    def end(self, table: TsvTable) -> None:
        assert self.report is not None
        self.report.rows_read = max(table.line_no - 1, 0)
        self.report.seconds = time.perf_counter() - self.started
        self.report.sanitized = table.sanitized
        self.tick(table)
        self.done += table.size

    def stage(self, name: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(IngestProgress(name, 0, 0, 0.0, fraction))


class _KeySet:
    """Membership of many strings at 8 bytes each: their 64-bit hashes, sorted, in numpy.

    `hash()` of a str is salted per process but stable within one, and one ingest runs in one
    process. A collision (about 1 in 2**64 per pair) only keeps a photo whose observation was
    not kept; selection joins photos to observations, so such a row is never used.
    """

    def __init__(self) -> None:
        self._hashes = array("q")
        self._sorted = np.empty(0, dtype=np.int64)

    def extend(self, keys: list[str]) -> None:
        self._hashes.extend(map(hash, keys))

    def freeze(self) -> None:
        self._sorted = np.unique(np.frombuffer(self._hashes, dtype=np.int64))
        self._hashes = array("q")

    def __len__(self) -> int:
        return len(self._sorted)

    def contains(self, keys: list[str]) -> list[bool]:
        if not len(self._sorted) or not keys:
            return [False] * len(keys)
        wanted = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))
        index = np.searchsorted(self._sorted, wanted)
        index[index == len(self._sorted)] = 0
        return (self._sorted[index] == wanted).tolist()


# --- loaders: where the kept rows go ---------------------------------------------------------


class _CopyStream:
    """A file-like object for `copy_expert`: each `read()` pulls the next chunk of COPY text
    (one batch of rows) from a generator, so the file streams and is never held whole.

    psycopg2 turns an exception raised inside `read()` into a generic COPY error; the original
    (a DumpError naming the line, a cancelled job) is kept here to be raised again.
    """

    def __init__(self, chunks: Iterable[str]) -> None:
        self._chunks = iter(chunks)
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> str:
        try:
            for chunk in self._chunks:
                if chunk:
                    return chunk
        except BaseException as exc:
            self.error = exc
            raise
        return ""


class _PostgresLoader:
    """One transaction on a raw psycopg2 connection: TRUNCATE, drop keys, COPY, rebuild keys."""

    copy = True

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        self._conn = engine.raw_connection()
        self._cursor = self._conn.cursor()
        self._tables = [SQLModel.metadata.tables[t] for t in TABLES.values()]

    def _ddl(self, element: Any) -> None:
        self._cursor.execute(str(element.compile(dialect=self.dialect)))

    def begin(self) -> None:
        names = ", ".join(t.name for t in self._tables)
        self._cursor.execute(f"TRUNCATE {names}")
        for table in self._tables:
            for index in table.indexes:
                self._ddl(DropIndex(index))
            self._ddl(DropConstraint(table.primary_key))

    def load(self, kind: str, table: TsvTable, batches: Iterable[list[Match[str]]]) -> None:
        stream = _CopyStream(map(table.copy_text, batches))
        names = ", ".join(f'"{c}"' for c in table.copy_columns)
        sql = (
            f"COPY {TABLES[kind]} ({names}) FROM STDIN "
            "WITH (FORMAT csv, DELIMITER E'\\t', QUOTE E'\\x01', NULL '')"
        )
        try:
            self._cursor.copy_expert(sql, stream, size=COPY_CHUNK)
        except Exception as exc:
            if stream.error is not None:
                raise stream.error from None
            raise DumpError(f"the database refused the {kind} rows: {_first_line(exc)}") from exc
        if stream.error is not None:  # pragma: no cover (psycopg2 always fails the COPY)
            raise stream.error

    def finish(self, files: dict[str, Path]) -> dict[str, float]:
        """Rebuild keys and indexes, gather statistics, commit; seconds spent per table."""
        seconds: dict[str, float] = {}
        for kind, name in TABLES.items():
            started = time.perf_counter()
            table = SQLModel.metadata.tables[name]
            try:
                self._ddl(AddConstraint(table.primary_key))
                for index in table.indexes:
                    self._ddl(CreateIndex(index))
            except Exception as exc:
                raise DumpError(
                    f"{files[kind].name} repeats a row key: {_first_line(exc)}"
                ) from exc
            self._cursor.execute(f"ANALYZE {name}")
            seconds[kind] = time.perf_counter() - started
        self._conn.commit()
        return seconds

    def close(self) -> None:
        # A no-op after commit; after a failure it must not hide the error that got us here.
        with suppress(Exception):
            self._conn.rollback()
        self._conn.close()


class _SqliteLoader:
    """Temporary tables (private to this connection, no database lock), then one swap."""

    copy = False

    def __init__(self, engine: Engine) -> None:
        self._conn = engine.raw_connection()
        self._db: Any = self._conn.driver_connection

    def begin(self) -> None:
        for name in TABLES.values():
            self._db.execute(f"DROP TABLE IF EXISTS temp.load_{name}")
            self._db.execute(f"CREATE TEMP TABLE load_{name} AS SELECT * FROM main.{name} WHERE 0")
        self._db.commit()

    def load(self, kind: str, table: TsvTable, batches: Iterable[list[Match[str]]]) -> None:
        columns = table.copy_columns
        sql = (
            f"INSERT INTO temp.load_{TABLES[kind]} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})"
        )
        for batch in batches:
            if batch:
                self._db.executemany(sql, table.values(batch))
        self._db.commit()

    def finish(self, files: dict[str, Path]) -> dict[str, float]:
        """Swap the loaded rows into the staging tables; seconds spent per table."""
        import sqlite3

        seconds: dict[str, float] = {}
        self._db.execute("BEGIN IMMEDIATE")
        for kind, name in TABLES.items():
            started = time.perf_counter()
            columns = ", ".join(c.name for c in SQLModel.metadata.tables[name].columns)
            self._db.execute(f"DELETE FROM main.{name}")
            try:
                self._db.execute(
                    f"INSERT INTO main.{name} ({columns}) SELECT {columns} FROM temp.load_{name}"
                )
            except sqlite3.IntegrityError as exc:
                raise DumpError(f"{files[kind].name} repeats a row key: {exc}") from exc
            seconds[kind] = time.perf_counter() - started
        self._db.commit()
        return seconds

    def close(self) -> None:
        with suppress(Exception):  # never hide the error that got us here
            self._db.rollback()
            for name in TABLES.values():
                self._db.execute(f"DROP TABLE IF EXISTS temp.load_{name}")
            self._db.commit()
        self._conn.close()


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")[:2]).strip()


# --- the ingest ------------------------------------------------------------------------------


def _find_roots(table: TsvTable, names: list[str]) -> dict[str, list[int]]:
    """First pass over taxa.csv: the taxon ids of each root name (active ones preferred);
    numeric "names" are taxon ids. Reads (and so checks) every line."""
    wanted = set(names)
    hits: dict[str, list[tuple[int, bool]]] = {name: [] for name in names}
    g_id, g_name, g_active = (table.groups[c] for c in ("taxon_id", "name", "active"))
    for match in table.rows():
        taxon_id, name = match.group(g_id), match.group(g_name)
        for key in (name, taxon_id):
            if key in wanted:
                hits[key].append((int(taxon_id), match.group(g_active)[0] in "tT"))
    missing = [name for name, found in hits.items() if not found]
    if missing:
        raise DumpError(
            f"{table.name} has no taxon named {', '.join(repr(m) for m in missing)}; "
            "root taxa are matched by exact scientific name (e.g. Basidiomycota) or taxon id"
        )
    roots: dict[str, list[int]] = {}
    for name, found in hits.items():
        active = [taxon_id for taxon_id, is_active in found if is_active]
        roots[name] = sorted(active or [taxon_id for taxon_id, _ in found])
    return roots


Batches = Iterator[list[Match[str]]]


def _kept_taxa(table: TsvTable, roots: set[str], kept: set[str], report: FileReport) -> Batches:
    g_id, g_ancestry = table.groups["taxon_id"], table.groups["ancestry"]
    for batch in table.batches():
        out = [
            m for m in batch
            if m.group(g_id) in roots or not roots.isdisjoint(m.group(g_ancestry).split("/"))
        ]  # fmt: skip
        kept.update([m.group(g_id) for m in out])
        report.rows_kept += len(out)
        yield out


def _kept_observations(
    table: TsvTable, taxa: set[str], keys: _KeySet, observers: set[str], report: FileReport
) -> Batches:
    g_taxon, g_uuid = table.groups["taxon_id"], table.groups["observation_uuid"]
    g_observer = table.groups["observer_id"]
    for batch in table.batches():
        out = [m for m in batch if m.group(g_taxon) in taxa]
        keys.extend([m.group(g_uuid) for m in out])
        observers.update([m.group(g_observer) for m in out])
        report.rows_kept += len(out)
        yield out


def _kept_photos(table: TsvTable, keys: _KeySet, report: FileReport) -> Batches:
    g_uuid = table.groups["observation_uuid"]
    for batch in table.batches():
        out = list(compress(batch, keys.contains([m.group(g_uuid) for m in batch])))
        report.rows_kept += len(out)
        yield out


def _kept_observers(table: TsvTable, wanted: set[str], report: FileReport) -> Batches:
    g_id = table.groups["observer_id"]
    for batch in table.batches():
        out = [m for m in batch if m.group(g_id) in wanted]
        report.rows_kept += len(out)
        yield out


def ingest_dump(
    engine: Engine,
    directory: str | Path,
    *,
    root_taxa: Iterable[str] = DEFAULT_ROOT_TAXA,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> IngestReport:
    """Replace the staging tables with the part of the dump in `directory` under `root_taxa`.

    Raises DumpError (nothing changed) for a missing file, a malformed line, an unknown root.
    `progress` is called every 64k lines and between stages; `log` gets one line per file.
    """
    started = time.perf_counter()
    files = find_dump(directory)
    names = [" ".join(n.split()) for n in root_taxa if n.strip()]
    if not names:
        raise DumpError("no root taxa given")
    report = IngestReport(directory=str(Path(directory).expanduser().resolve()))
    say = log or (lambda _message: None)
    sizes = {kind: path.stat().st_size for kind, path in files.items()}
    tracker = _Tracker(2 * sizes["taxa"] + sum(sizes.values()), progress)

    def open_table(kind: str, capture: Iterable[str] | None = None) -> TsvTable:
        return TsvTable(files[kind], kind, on_progress=tracker.tick, capture=capture)

    # Pass 1: find the roots (and check taxa.csv through) before touching the database.
    with open_table("taxa", ("taxon_id", "name", "active")) as table:
        tracker.begin(FileReport(table.name))
        report.root_taxa = _find_roots(table, names)
        tracker.end(table)
    say(
        "root taxa: "
        + ", ".join(f"{n} ({', '.join(map(str, ids))})" for n, ids in report.root_taxa.items())
    )

    loader: _PostgresLoader | _SqliteLoader = (
        _PostgresLoader(engine) if engine.dialect.name == "postgresql" else _SqliteLoader(engine)
    )
    roots = {str(i) for ids in report.root_taxa.values() for i in ids}
    taxa: set[str] = set()
    observation_keys = _KeySet()
    observers: set[str] = set()
    gc_was_enabled = gc.isenabled()
    try:
        # Millions of short-lived match objects and no reference cycles: the cyclic collector
        # would only cost time (about a fifth of it), so it rests until the load is over.
        gc.disable()
        loader.begin()
        for kind in TABLES:
            file_report = report.files[kind] = FileReport(files[kind].name)
            with open_table(kind, FILTER_COLUMNS[kind] if loader.copy else None) as table:
                tracker.begin(file_report)
                if kind == "taxa":
                    kept: Batches = _kept_taxa(table, roots, taxa, file_report)
                elif kind == "observations":
                    kept = _kept_observations(table, taxa, observation_keys, observers, file_report)
                elif kind == "photos":
                    observation_keys.freeze()
                    kept = _kept_photos(table, observation_keys, file_report)
                else:
                    observers.discard("")
                    kept = _kept_observers(table, observers, file_report)
                loader.load(kind, table, kept)
                tracker.end(table)
            say(file_report.summary())
        tracker.stage(
            "rebuilding indexes" if loader.copy else "saving the staging tables",
            READ_SHARE,
        )
        finishing = time.perf_counter()
        for kind, seconds in loader.finish(files).items():
            report.files[kind].finish_seconds = seconds
        report.finish_seconds = time.perf_counter() - finishing
    finally:
        if gc_was_enabled:
            gc.enable()
        loader.close()
    report.seconds = time.perf_counter() - started
    tracker.stage("done", 1.0)
    return report


def staged_counts(engine: Engine) -> dict[str, int]:
    """Rows in each staging table (what the last ingest kept)."""
    with engine.connect() as conn:
        return {
            kind: conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
            for kind, name in TABLES.items()
        }
