"""Receive an uploaded file by streaming the multipart body as it arrives, size-bounded.

Starlette's own form parsing spools every file to the system temp folder, unbounded, before a
route sees it; an upload of photos can be gigabytes. Here the body is parsed as it arrives and
the file part, counting bytes, goes either to disk (`receive_file`: a hidden `.part` file in
the target folder, renamed into place under a random name when complete, removed otherwise) or
to memory (`receive_in_memory`, for a photo that is looked at and never kept). Past the limit
the upload stops with `UploadTooLarge`. The client's file name is kept only as a label.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

MAX_FIELDS = 16
MAX_FIELD_BYTES = 8 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UploadError(ValueError):
    """The upload cannot be taken; the message says why. (HTTP 422)"""

    status_code = 422


class UploadTooLarge(UploadError):
    status_code = 413


@dataclass
class Upload:
    path: Path
    filename: str  # the client's name for it, cleaned; a label only, never a path
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)


def human_size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError  # pragma: no cover


def too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"the upload is larger than the limit of {human_size(limit)} "
        "(setting SPOREPRINT_MAX_UPLOAD_BYTES); nothing was kept"
    )


def clean_filename(name: str) -> str:
    base = re.split(r"[/\\]", name)[-1]
    return _CONTROL.sub("", base).strip()[:120] or "upload"


@dataclass
class MemoryUpload:
    data: bytes | None  # None: the form came without a file (a browser's empty file part)
    filename: str
    fields: dict[str, str] = field(default_factory=dict)


class _Receiver:
    """python-multipart callbacks: one file part to a sink, small text fields to memory."""

    def __init__(self, open_sink: Callable[[], IO[bytes]], file_field: str, limit: int) -> None:
        self.open_sink, self.file_field, self.limit = open_sink, file_field, limit
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.filename: str | None = None
        self.out: IO[bytes] | None = None
        self.in_file = False
        self.size = 0
        self.sha = hashlib.sha256()
        self.got_file = False
        self.fields: dict[str, str] = {}
        self.value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_val,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self.headers, self.name, self.filename, self.in_file = {}, None, None, False
        self.value = bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_val(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw = options.get(b"filename")
        self.filename = raw.decode("utf-8", "replace") if raw is not None else None
        if self.name == self.file_field and self.filename is not None:
            if self.got_file:
                raise UploadError("send one file per upload")
            self.got_file = self.in_file = True
            self.filename = clean_filename(self.filename) if self.filename else ""
            self.out = self.open_sink()
        elif self.filename is None and len(self.fields) >= MAX_FIELDS:
            raise UploadError("the form has too many fields")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.in_file:
            assert self.out is not None
            self.size += len(chunk)
            if self.size > self.limit:
                raise too_large(self.limit)
            self.sha.update(chunk)
            self.out.write(chunk)
        elif self.filename is None:  # a text field; other files are ignored
            if len(self.value) + len(chunk) > MAX_FIELD_BYTES:
                raise UploadError(f"the form field {self.name!r} is too long")
            self.value += chunk

    def part_end(self) -> None:
        if self.in_file:
            self.close()
            self.in_file = False
        elif self.filename is None and self.name:
            self.fields[self.name] = self.value.decode("utf-8", "replace")

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None


def _multipart_boundary(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError("send the file as a multipart/form-data form")
    return boundary


async def receive_file(
    chunks: AsyncIterator[bytes],
    content_type: str,
    folder: Path,
    *,
    file_field: str,
    limit: int,
    suffix: str,
) -> Upload:
    """Stream the multipart body's `file_field` into `folder/<random><suffix>`.

    Raises UploadTooLarge past `limit` bytes of file, UploadError for anything else wrong;
    either way nothing is left in `folder`.
    """
    boundary = _multipart_boundary(content_type)
    folder.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    tmp = folder / f".{name}.part"
    receiver = _Receiver(lambda: tmp.open("xb"), file_field, limit)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in chunks:
            if chunk:
                await run_in_threadpool(parser.write, chunk)
        parser.finalize()
        receiver.close()
        if not receiver.got_file or receiver.size == 0:
            raise UploadError("choose a file to upload; the form arrived without one")
        final = folder / f"{name}{suffix}"
        tmp.replace(final)
    except FormParserError as exc:
        receiver.close()
        tmp.unlink(missing_ok=True)
        raise UploadError(f"the upload is not a well-formed form ({exc})") from None
    except BaseException:
        receiver.close()
        tmp.unlink(missing_ok=True)
        raise
    return Upload(
        path=final,
        filename=receiver.filename or "upload",
        size=receiver.size,
        sha256=receiver.sha.hexdigest(),
        fields=receiver.fields,
    )


class _Buffer(io.BytesIO):
    """A BytesIO whose contents survive `close()` (the receiver closes its sink)."""

    value = b""

    def close(self) -> None:
        self.value = self.getvalue()
        super().close()


async def receive_in_memory(
    chunks: AsyncIterator[bytes], content_type: str, *, file_field: str, limit: int
) -> MemoryUpload:
    """The multipart body's `file_field` in memory (at most `limit` bytes) and its text fields.

    Raises UploadTooLarge past `limit`, UploadError for a body that is not a well-formed form.
    """
    boundary = _multipart_boundary(content_type)
    sink = _Buffer()
    receiver = _Receiver(lambda: sink, file_field, limit)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in chunks:
            if chunk:
                parser.write(chunk)  # in memory and bounded: no need for a thread
        parser.finalize()
    except FormParserError as exc:
        raise UploadError(f"the upload is not a well-formed form ({exc})") from None
    finally:
        receiver.close()
    # A browser sends an empty, nameless file part when no file was chosen.
    chosen = receiver.got_file and bool(receiver.filename or receiver.size)
    return MemoryUpload(
        data=sink.value if chosen else None,
        filename=receiver.filename or "",
        fields=receiver.fields,
    )
