"""Validated rows from the iNaturalist open-data metadata files.

The dump is four tab-separated files with a header row, each plain (`photos.csv`) or gzipped
(`photos.csv.gz`). There is no quoting: quotes inside names are data and are kept literally.

Each file is checked as it streams, line by line, against one compiled regular expression per
file (the column count and every column's syntax in one C-speed match). A line that does not
match is looked at again, column by column, to say exactly what is wrong, where:
`photos.csv line 17: column width: 'abc' is not an integer`. Nothing here writes anywhere, so a
caller that loads rows inside one transaction loads nothing from a malformed file.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO, Literal

FILES = ("taxa", "observations", "photos", "observers")
BATCH_ROWS = 2_048  # rows handed on at once: small enough to stay in cache
PROGRESS_EVERY = 65_536  # lines between progress callbacks

Kind = Literal["uuid", "bigint", "int", "float", "bool", "date", "ancestry", "text"]


class DumpError(ValueError):
    """The dump (its folder, or a line of one of its files) cannot be used; the message says
    what and where."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = True
    max_length: int | None = None
    required: bool = True  # must be in the header


def _columns(*columns: Column) -> tuple[Column, ...]:
    return columns


# The columns we keep, as in the real dump (its own schema: uuid, integer, numeric, date ...).
SPECS: dict[str, tuple[Column, ...]] = {
    "taxa": _columns(
        Column("taxon_id", "bigint", nullable=False),
        Column("ancestry", "ancestry"),
        Column("rank_level", "float"),
        Column("rank", "text", max_length=32),
        Column("name", "text", nullable=False),
        Column("active", "bool", nullable=False),
    ),
    "observations": _columns(
        Column("observation_uuid", "uuid", nullable=False),
        Column("observer_id", "bigint"),
        Column("latitude", "float"),
        Column("longitude", "float"),
        Column("positional_accuracy", "int"),
        Column("taxon_id", "bigint"),
        Column("quality_grade", "text", max_length=32),
        Column("observed_on", "date"),
        Column("anomaly_score", "float", required=False),
    ),
    "photos": _columns(
        Column("photo_uuid", "uuid", nullable=False),
        Column("photo_id", "bigint", nullable=False),
        Column("observation_uuid", "uuid", nullable=False),
        Column("observer_id", "bigint"),
        Column("extension", "text", max_length=16),
        Column("license", "text", max_length=32),
        Column("width", "int"),
        Column("height", "int"),
        Column("position", "int"),
    ),
    "observers": _columns(
        Column("observer_id", "bigint", nullable=False),
        Column("login", "text"),
        Column("name", "text"),
    ),
}

# Text may hold anything but a tab and the three characters the PostgreSQL COPY stream cannot
# carry (NUL, our never-used quote character \x01, a bare carriage return); those are replaced.
_TEXT = r"[^\t\x00\x01\r]"
_PATTERNS: dict[str, str] = {
    "uuid": r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
    "bigint": r"-?[0-9]{1,18}",
    "int": r"-?[0-9]{1,9}",
    "float": r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?",
    "bool": r"(?:true|false|t|f|TRUE|FALSE|True|False)",
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "ancestry": r"[0-9]{1,18}(?:/[0-9]{1,18})*",
}
_DESCRIBE: dict[str, str] = {
    "uuid": "a UUID",
    "bigint": "an integer",
    "int": "an integer below 1,000,000,000",
    "float": "a number",
    "bool": "true or false",
    "date": "a date (YYYY-MM-DD)",
    "ancestry": "taxon ids joined by '/'",
}
_CONTROL = re.compile(r"[\x00\x01\r]")
_CLEAN = str.maketrans({"\x00": "\ufffd", "\x01": "\ufffd", "\r": "\ufffd"})


def _pattern(column: Column | None) -> str:
    """The regular expression for one column's value (an unknown column: any text)."""
    if column is None:
        return f"{_TEXT}*"
    if column.kind == "text":
        low = 0 if column.nullable else 1
        return f"{_TEXT}{{{low},{column.max_length or ''}}}"
    body = _PATTERNS[column.kind]
    return f"(?:{body})?" if column.nullable else body


def _truthy(value: str) -> bool:
    return value[0] in "tT"


def _converter(column: Column) -> Callable[[str], Any]:
    """Text → the Python value a DB-API driver stores; '' → None (as COPY's NULL '')."""
    kind = column.kind
    if kind in ("bigint", "int"):
        return lambda v: int(v) if v else None
    if kind == "float":
        return lambda v: float(v) if v else None
    if kind == "bool":
        return lambda v: _truthy(v) if v else None
    return lambda v: v or None  # text, uuid, ancestry, date (ISO text, as SQLite stores it)


def find_dump(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """The four files of an open-data dump in `directory` (`name.csv` or `name.csv.gz`; the
    plain file wins when both are there), or a DumpError that says what is missing."""
    folder = Path(directory).expanduser()
    if not folder.exists():
        raise DumpError(f"{folder} does not exist")
    if not folder.is_dir():
        raise DumpError(f"{folder} is not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DumpError(f"{folder} cannot be read (permissions)")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in FILES:
        candidates = [folder / f"{name}.csv", folder / f"{name}.csv.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(f"{name}.csv")
        elif not os.access(path, os.R_OK):
            raise DumpError(f"{path} cannot be read (permissions)")
        else:
            found[name] = path
    if missing:
        raise DumpError(
            f"{folder} is not an iNaturalist open-data folder: it has no "
            f"{', '.join(missing)} (each may also be gzipped, as .csv.gz)"
        )
    return found


class TsvTable:
    """One dump file, opened for streaming: `batches()` yields lists of `re.Match`, one per
    valid line (`rows()` the same, one by one).

    `groups[name]` is the match group that holds column `name`; `copy_text(batch)` is the rows
    as PostgreSQL COPY text for `copy_columns`, `values(batch)` the same as Python tuples.
    """

    def __init__(
        self,
        path: Path,
        kind: str,
        *,
        on_progress: Callable[[TsvTable], None] | None = None,
        capture: Collection[str] | None = None,
    ) -> None:
        """`capture`: the columns the caller reads from each match (None: all, as `values()`
        needs). Fewer capture groups make a faster match; they are used when the lines go to
        COPY unchanged."""
        self.path = path
        self.kind = kind
        self.name = path.name
        self.spec = SPECS[kind]
        self.size = path.stat().st_size
        self.line_no = 0
        self.sanitized = 0  # lines whose control characters were replaced
        self._on_progress = on_progress
        self._raw: BinaryIO = path.open("rb")
        try:
            stream: BinaryIO = self._raw
            if path.name.endswith(".gz"):
                stream = gzip.GzipFile(fileobj=self._raw, mode="rb")
            # newline="\n": only \n ends a line; a stray \r stays in its field, where it is seen.
            self._text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="\n")
            with self._read_errors():
                header_line = self._text.readline()
            self._setup(header_line, capture)
        except BaseException:
            self.close()
            raise

    # --- set-up ---------------------------------------------------------------------------

    def _setup(self, header_line: str, capture: Collection[str] | None) -> None:
        if not header_line.strip():
            raise DumpError(f"{self.name} is empty (expected a header row)")
        self.line_no = 1
        self.header = header_line.rstrip("\r\n").split("\t")
        by_name = {c.name: c for c in self.spec}
        seen: set[str] = set()
        for field in self.header:
            if field in seen:
                raise self.error(f"the header names column {field!r} twice")
            seen.add(field)
        missing = [c.name for c in self.spec if c.required and c.name not in seen]
        if missing:
            raise DumpError(
                f"{self.name}: missing column(s) {', '.join(missing)}; its header has "
                f"{', '.join(self.header)} (tab-separated)"
            )
        self.file_columns: list[Column | None] = [by_name.get(f) for f in self.header]
        self.columns = [c for c in self.file_columns if c is not None]
        # Every column known: COPY the line as it is, in the file's own column order.
        self.passthrough = all(c is not None for c in self.file_columns)
        wanted = None if capture is None or not self.passthrough else set(capture)
        captured = [
            c is not None and (wanted is None or c.name in wanted or c.kind == "date")
            for c in self.file_columns
        ]
        self._regex = re.compile(
            "\t".join(
                f"({_pattern(c)})" if keep else f"(?:{_pattern(c)})"
                for c, keep in zip(self.file_columns, captured, strict=True)
            ),
            re.ASCII,
        )
        kept = [c for c, keep in zip(self.file_columns, captured, strict=True) if keep]
        self.groups = {c.name: number for number, c in enumerate(kept, start=1) if c is not None}
        self.copy_columns = [c.name for c in self.columns]
        self._all_groups = len(self.groups) == len(self.columns)
        self._indices = [self.groups.get(n, 0) for n in self.copy_columns]
        self._converters = [_converter(c) for c in self.columns]
        self._dates = [(self.groups[c.name], c.name) for c in self.columns if c.kind == "date"]

    # --- reading --------------------------------------------------------------------------

    def batches(self) -> Iterator[list[re.Match[str]]]:
        """Valid rows, `BATCH_ROWS` at a time: one list per step keeps the per-row cost down to
        the regular expression. The progress hook runs every `PROGRESS_EVERY` lines, after the
        batch that crosses the mark has been consumed."""
        fullmatch, dates, size = self._regex.fullmatch, self._dates, BATCH_ROWS
        next_report = self.line_no + PROGRESS_EVERY
        batch: list[re.Match[str]] = []
        with self._read_errors():
            for line in self._text:
                self.line_no += 1
                body = line.rstrip("\r\n")
                match = fullmatch(body)
                if match is None:
                    if not body.strip():
                        continue  # a blank line (often the last)
                    match = self._slow_match(body)
                if dates:
                    for group, name in dates:
                        self._check_date(match.group(group), name)
                batch.append(match)
                if len(batch) >= size:
                    yield batch
                    batch = []
                    if self._on_progress is not None and self.line_no >= next_report:
                        next_report = self.line_no + PROGRESS_EVERY
                        self._on_progress(self)
        if batch:
            yield batch

    def rows(self) -> Iterator[re.Match[str]]:
        for batch in self.batches():
            yield from batch

    def _slow_match(self, body: str) -> re.Match[str]:
        """A line the fast pattern refused: clean control characters, or say what is wrong."""
        if _CONTROL.search(body):
            cleaned = body.translate(_CLEAN)
            match = self._regex.fullmatch(cleaned)
            if match is not None:
                self.sanitized += 1
                return match
            body = cleaned
        fields = body.split("\t")
        if len(fields) != len(self.header):
            raise self.error(
                f"{len(fields)} tab-separated fields where the header has {len(self.header)}"
            )
        for column, value in zip(self.file_columns, fields, strict=True):
            if column is None or re.fullmatch(_pattern(column), value, re.ASCII):
                continue
            if not value and not column.nullable:
                raise self.error(f"column {column.name} is empty")
            if column.kind == "text":
                raise self.error(
                    f"column {column.name}: {_clip(value)!r} is longer than "
                    f"{column.max_length} characters"
                )
            raise self.error(
                f"column {column.name}: {_clip(value)!r} is not {_DESCRIBE[column.kind]}"
            )
        raise self.error("cannot be read")  # pragma: no cover (every column matched)

    def _check_date(self, value: str, name: str) -> None:
        if value:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise self.error(f"column {name}: {value!r} is not a real date") from None

    class _Errors:
        def __init__(self, table: TsvTable) -> None:
            self.table = table

        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
            table = self.table
            if isinstance(exc, UnicodeDecodeError):
                raise DumpError(
                    f"{table.name} line {table.first_bad_utf8_line()}: is not UTF-8 text"
                ) from None
            if isinstance(exc, gzip.BadGzipFile):
                raise DumpError(
                    f"{table.name} is not a gzip file ({exc}); a plain text file must be "
                    f"named {table.name.removesuffix('.gz')}"
                ) from None
            if isinstance(exc, EOFError | zlib.error):
                raise DumpError(
                    f"{table.name} is damaged: its gzip stream stops or breaks after line "
                    f"{table.line_no} ({exc})"
                ) from None

    def _read_errors(self) -> TsvTable._Errors:
        return TsvTable._Errors(self)

    # --- rows out -------------------------------------------------------------------------

    def copy_text(self, batch: list[re.Match[str]]) -> str:
        """Rows as COPY text (tab-separated lines, `copy_columns` order)."""
        if self.passthrough:
            lines = [match.string for match in batch]
        else:
            indices = self._indices
            lines = ["\t".join([match.group(i) for i in indices]) for match in batch]
        lines.append("")
        return "\n".join(lines)

    def values(self, batch: list[re.Match[str]]) -> list[tuple[Any, ...]]:
        """Rows as tuples of Python values, in `copy_columns` order."""
        assert self._all_groups, "opened with capture= a subset of the columns"
        pairs = list(zip(self._converters, self._indices, strict=True))
        return [tuple(convert(match.group(i)) for convert, i in pairs) for match in batch]

    # --- bookkeeping ----------------------------------------------------------------------

    def first_bad_utf8_line(self) -> int | str:
        """The line that holds the first invalid UTF-8 (text is decoded in chunks, ahead of
        the line being read, so this is found again from the start; errors are rare)."""
        try:
            with self.path.open("rb") as raw:
                stream: BinaryIO = raw
                if self.name.endswith(".gz"):
                    stream = gzip.GzipFile(fileobj=raw, mode="rb")
                for number, line in enumerate(stream, start=1):
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        return number
        except (OSError, EOFError, zlib.error):
            pass
        return f"{self.line_no + 1}?"

    def position(self) -> int:
        """Bytes of the file (compressed, for .gz) consumed so far."""
        try:
            return min(self._raw.tell(), self.size)
        except (OSError, ValueError):
            return self.size

    def error(self, message: str) -> DumpError:
        return DumpError(f"{self.name} line {self.line_no}: {message}")

    def close(self) -> None:
        text = getattr(self, "_text", None)
        try:
            if text is not None:
                text.close()
        except (OSError, EOFError, zlib.error):
            pass
        self._raw.close()

    def __enter__(self) -> TsvTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clip(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[:limit] + "…"
