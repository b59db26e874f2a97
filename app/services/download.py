"""Download pending photos: bounded-concurrency async HTTP, verified, content-addressed.

The rules, without Celery (the `download` job in `workers/tasks/download.py` is a thin shell):

- **What is taken**: `Image` rows with a `source_url` whose `download_state` is `pending` (and
  `failed` ones too with `retry_failed`), oldest first, read from the database page by page. A
  re-run therefore picks up exactly what an interrupted run left.
- **How**: `httpx` over HTTP/1.1 keep-alive, `concurrency` connections (one per small client,
  see `_Clients`), at most `concurrency` requests at once and `per_host` to any one host, on
  uvloop where installed. Timeouts, connection errors,
  429, 408 and 5xx are retried with exponential backoff and full jitter (a `Retry-After` in
  seconds or as an HTTP date is honoured, capped); 404/403/410 and other 4xx fail at once.
  Attempts are counted on the row either way.
- **Every file** is streamed into a temp file in its species folder while its sha256 is
  computed. Bytes already stored for another image (in the database, or earlier in this run)
  make it a `duplicate` naming that image, with no second copy. Otherwise it is decoded and
  verified with Pillow (empty, truncated, not an image, too many pixels; an HTML answer fails
  before its body is read) and only then renamed into `images/<species>/<sha[:2]>/<sha>.<ext>`,
  the folder import's layout. The bytes are stored as downloaded (provenance); the WebP
  thumbnail, made once, applies EXIF orientation.
- **Stopping**: `should_stop()` is checked before each file and a few times a second. Once it
  says stop, no new file starts, retries waiting for their backoff are abandoned (they stay
  pending), downloads in flight get `stop_grace` seconds to finish and are then abandoned too.
  A temp file never outlives its download, so no partial photo is ever left behind.
- **The database** is written by one writer, in short transactions of up to `batch_size`
  results or every `batch_interval` seconds, on its own thread; a second thread does the reads
  (pages of work, and duplicate look-ups batched into one query for all files waiting). The
  event loop never waits on the database or on Pillow (decoding and thumbnails run in a thread
  pool; Pillow's WebP encoder releases the GIL).

Two download runs over the same pending images at the same moment would both fetch them (the
rows are not locked); the outcome is still consistent, as both store the same bytes under the
same name. Run one download job at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import os
import random
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import bindparam, func, update
from sqlmodel import Session, col, select

from app.config import Settings
from app.db import get_engine
from app.models import DownloadState, Image, Species, utcnow
from app.services.photos import (
    FORMAT_SUFFIXES,
    IMAGES_DIR,
    ImageInfo,
    probe_image,
    species_folder,
    stored_path,
)
from app.services.thumbnails import make_thumbnail

USER_AGENT = "Sporeprint/0.1 (photo downloader)"
TEMP_PREFIX = ".download-"
TEMP_SUFFIX = ".part"
# A temp file older than this in a species folder was left by a killed worker; it is swept.
STALE_TEMP_S = 3600.0
PAGE_SIZE = 500
CHUNK_SIZE = 64 * 1024
STOP_POLL_S = 0.2
MAX_REPORTED_FAILURES = 50
# Statuses worth another try: the server is busy, rate-limiting, or briefly broken.
RETRY_STATUSES = frozenset({408, 425, 429})
NOT_IMAGE_TYPES = frozenset({"application/json", "application/xml", "application/xhtml+xml"})


class DownloadError(ValueError):
    """A download request that cannot be honoured (e.g. an unknown species)."""


@dataclass(frozen=True)
class DownloadConfig:
    concurrency: int = 32
    per_host: int = 16
    max_attempts: int = 4
    timeout: float = 30.0  # seconds without progress on one request
    backoff_base: float = 0.5  # first retry waits up to this long; doubles each time
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0  # longest Retry-After we honour
    max_bytes: int = 64 * 1024 * 1024
    batch_size: int = 50
    batch_interval: float = 1.0
    stop_grace: float = 10.0  # seconds in-flight downloads may take to finish after a stop
    threads: int = field(default_factory=lambda: min(8, max(2, os.cpu_count() or 2)))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DownloadConfig:
        base = cls(
            concurrency=settings.download_concurrency,
            per_host=settings.download_per_host,
            max_attempts=settings.download_max_attempts,
            timeout=settings.download_timeout,
        )
        return replace(base, **overrides)


@dataclass(frozen=True)
class PendingImage:
    id: int
    url: str
    folder: str  # species folder under images/
    attempts: int  # before this run


@dataclass(frozen=True)
class Outcome:
    """What happened to one image in this run; `pending` means abandoned on a stop."""

    image_id: int
    state: DownloadState
    attempts: int  # made in this run
    error: str | None = None
    path: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None


@dataclass(frozen=True)
class DownloadProgress:
    done: int
    duplicate: int
    failed: int
    remaining: int
    total: int
    elapsed_s: float
    rate: float  # images finished (any state) per second
    eta_s: float | None

    @property
    def fraction(self) -> float:
        if self.total == 0:
            return 1.0
        return min(1.0, (self.done + self.duplicate + self.failed) / self.total)

    def text(self) -> str:
        parts = [f"{self.done} done"]
        if self.duplicate:
            parts.append(f"{self.duplicate} duplicate{'s' if self.duplicate != 1 else ''}")
        parts += [f"{self.failed} failed", f"{self.remaining} left", f"{self.rate:.1f} img/s"]
        if self.eta_s is not None and self.remaining:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return " · ".join(parts)


@dataclass
class DownloadReport:
    selected: int = 0
    done: int = 0
    duplicate: int = 0
    failed: int = 0
    left: int = 0  # still pending: not reached, or abandoned on a stop
    attempts: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    stopped: bool = False
    failures: list[tuple[int, str]] = field(default_factory=list)  # (image id, reason), capped

    @property
    def rate(self) -> float:
        finished = self.done + self.duplicate + self.failed
        return finished / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "done": self.done,
            "duplicate": self.duplicate,
            "failed": self.failed,
            "left": self.left,
            "attempts": self.attempts,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.rate, 2),
            "stopped": self.stopped,
            "failures": [{"image_id": i, "reason": r} for i, r in self.failures],
        }


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A `Retry-After` header in seconds: delta-seconds or an HTTP date; None when unusable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(attempt: int, config: DownloadConfig, rng: random.Random) -> float:
    """Full jitter: anywhere between 0 and base·2^(attempt-1), capped."""
    return rng.uniform(0, min(config.backoff_cap, config.backoff_base * 2 ** (attempt - 1)))


def status_text(code: int) -> str:
    try:
        return f"HTTP {code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Permanent(Exception):
    pass


# --- selecting work -------------------------------------------------------------------------


def _selection(species_ids: Sequence[int] | None, retry_failed: bool) -> Any:
    states = [DownloadState.pending.value]
    if retry_failed:
        states.append(DownloadState.failed.value)
    conditions = [col(Image.source_url).is_not(None), col(Image.download_state).in_(states)]
    if species_ids is not None:
        conditions.append(col(Image.species_id).in_(list(species_ids)))
    return conditions


def check_species(session: Session, species_ids: Sequence[int] | None) -> None:
    """Raise DownloadError naming any species id that does not exist."""
    if species_ids is None:
        return
    known = set(session.exec(select(Species.id).where(col(Species.id).in_(species_ids))).all())
    unknown = sorted(set(species_ids) - known)
    if unknown:
        raise DownloadError(f"unknown species id{'s' if len(unknown) > 1 else ''}: {unknown}")


def count_selected(
    session: Session,
    species_ids: Sequence[int] | None = None,
    retry_failed: bool = False,
    limit: int | None = None,
) -> int:
    query = select(func.count()).select_from(Image).where(*_selection(species_ids, retry_failed))
    total = session.exec(query).one()
    return total if limit is None else min(total, limit)


def select_page(
    session: Session,
    after_id: int,
    size: int,
    species_ids: Sequence[int] | None = None,
    retry_failed: bool = False,
) -> list[PendingImage]:
    query = (
        select(Image.id, Image.source_url, Image.download_attempts, Species.scientific_name)
        .join(Species, col(Species.id) == col(Image.species_id))
        .where(col(Image.id) > after_id, *_selection(species_ids, retry_failed))
        .order_by(col(Image.id))
        .limit(size)
    )
    return [
        PendingImage(id=i, url=u, folder=species_folder(name), attempts=a or 0)
        for i, u, a, name in session.exec(query).all()
    ]


# --- the run --------------------------------------------------------------------------------


_TICK = object()
_Stored = tuple[int, int | None, int | None]  # an image's id, width, height
_IMAGES = Image.__table__  # type: ignore[attr-defined]
_SET_RESULT = (
    update(_IMAGES)
    .where(_IMAGES.c.id == bindparam("b_id"))
    .values(
        download_state=bindparam("b_state"), download_error=bindparam("b_error"),
        path=bindparam("b_path"), sha256=bindparam("b_sha256"), width=bindparam("b_width"),
        height=bindparam("b_height"), size_bytes=bindparam("b_size"),
        download_attempts=bindparam("b_attempts"), updated_at=bindparam("b_now"),
    )
)  # fmt: skip
_SET_ATTEMPTS = (
    update(_IMAGES)
    .where(_IMAGES.c.id == bindparam("b_id"))
    .values(download_attempts=bindparam("b_attempts"), updated_at=bindparam("b_now"))
)


class _Clients:
    """`concurrency` keep-alive connections, each in its own one-connection httpx client.

    httpcore 1.0 walks its whole pool (polling every idle socket) on each request and release,
    so one pool of 32 costs several times the CPU of 32 pools of one. A free client that last
    talked to the same host is preferred, so its connection is reused; holding a client is the
    global concurrency limit.
    """

    def __init__(self, config: DownloadConfig) -> None:
        ssl_context = httpx.create_ssl_context()  # load the CA bundle once, not per client
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30)
        self.clients = [
            httpx.AsyncClient(
                limits=limits,
                timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
                verify=ssl_context,
                follow_redirects=True,
                headers={"User-Agent": USER_AGENT},
            )
            for _ in range(config.concurrency)
        ]
        self.slots = asyncio.Semaphore(config.concurrency)
        self.idle: dict[str, list[httpx.AsyncClient]] = {"": list(self.clients)}  # by last host

    async def acquire(self, host: str) -> httpx.AsyncClient:
        await self.slots.acquire()
        key = host if self.idle.get(host) else next(k for k, v in self.idle.items() if v)
        bucket = self.idle[key]
        client = bucket.pop()
        if not bucket:
            del self.idle[key]
        return client

    def release(self, client: httpx.AsyncClient, host: str) -> None:
        self.idle.setdefault(host, []).append(client)
        self.slots.release()

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


class _Downloader:
    def __init__(
        self,
        db_url: str,
        data_dir: Path,
        config: DownloadConfig,
        *,
        total: int,
        species_ids: Sequence[int] | None,
        retry_failed: bool,
        limit: int | None,
        should_stop: Callable[[], bool] | None,
        progress: Callable[[DownloadProgress], None] | None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = get_engine(db_url)
        self.data_dir = data_dir
        self.config = config
        self.species_ids = species_ids
        self.retry_failed = retry_failed
        self.limit = limit
        self.should_stop = should_stop or (lambda: False)
        self.on_progress = progress
        self.rng = rng or random.Random()
        self.report = DownloadReport(selected=total)
        # Files in flight (downloading, waiting to retry, or being verified), bounded.
        self.live = asyncio.Semaphore(config.concurrency * 4)
        self.hosts: dict[str, asyncio.Semaphore] = {}
        # sha256 → the image stored with those bytes: (id, width, height), or None while (or
        # if) the first copy of them in this run is still being (or failed to be) verified.
        self.claimed: dict[str, asyncio.Future[_Stored | None]] = {}
        self.lookups: list[tuple[str, asyncio.Future[_Stored | None]]] = []
        self.lookup_wanted = asyncio.Event()
        self.folders: set[str] = set()
        self.results: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self.stopping = asyncio.Event()
        self.cpu = ThreadPoolExecutor(config.threads, thread_name_prefix="download-cpu")
        self.db_read = ThreadPoolExecutor(1, thread_name_prefix="download-db-read")
        self.db_write = ThreadPoolExecutor(1, thread_name_prefix="download-db-write")
        self.started = time.monotonic()

    # -- stopping

    def _stop_requested(self) -> bool:
        if not self.stopping.is_set() and self.should_stop():
            self.stopping.set()
        return self.stopping.is_set()

    async def _watch_stop(self, finished: asyncio.Event) -> None:
        while not finished.is_set() and not self._stop_requested():
            await asyncio.sleep(STOP_POLL_S)

    async def _sleep_unless_stopped(self, delay: float) -> bool:
        """Sleep `delay` seconds; True when a stop came first."""
        try:
            await asyncio.wait_for(self.stopping.wait(), delay)
        except TimeoutError:
            return False
        return True

    # -- the database (each on its own single thread)

    def _read_page(self, after_id: int, size: int) -> list[PendingImage]:
        with Session(self.engine) as session:
            return select_page(session, after_id, size, self.species_ids, self.retry_failed)

    def _stored_many(self, hashes: Sequence[str]) -> dict[str, _Stored]:
        """The image already stored with each of these sha256s, where there is one."""
        query = (
            select(_IMAGES.c.sha256, _IMAGES.c.id, _IMAGES.c.width, _IMAGES.c.height)
            .where(
                _IMAGES.c.sha256.in_(hashes),
                _IMAGES.c.download_state == DownloadState.done.value,
            )
            .order_by(_IMAGES.c.id)
        )
        found: dict[str, _Stored] = {}
        with self.engine.connect() as conn:
            for sha256, image_id, width, height in conn.execute(query):
                found.setdefault(sha256, (image_id, width, height))
        return found

    def _commit(self, batch: Sequence[tuple[Outcome, int]]) -> None:
        """One short transaction: Core executemany, not the ORM (a few µs a row, not 100s)."""
        now = utcnow()
        finished, abandoned = [], []
        for outcome, prior in batch:
            row: dict[str, Any] = {
                "b_id": outcome.image_id,
                "b_attempts": prior + outcome.attempts,
                "b_now": now,
            }
            if outcome.state is DownloadState.pending:
                abandoned.append(row)
                continue
            row.update(
                b_state=outcome.state.value,
                b_error=outcome.error[:512] if outcome.error else None,
                b_path=outcome.path,
                b_sha256=outcome.sha256,
                b_width=outcome.width,
                b_height=outcome.height,
                b_size=outcome.size_bytes,
            )
            finished.append(row)
        with self.engine.begin() as conn:
            if finished:
                conn.execute(_SET_RESULT, finished)
            if abandoned:
                conn.execute(_SET_ATTEMPTS, abandoned)

    async def _lookups(self) -> None:
        """Answer `_lookup` calls in batches: one query for all the hashes asked meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            await self.lookup_wanted.wait()
            self.lookup_wanted.clear()
            batch, self.lookups = self.lookups, []
            hashes = sorted({sha256 for sha256, _ in batch})
            found = await loop.run_in_executor(self.db_read, self._stored_many, hashes)
            for sha256, answer in batch:
                if not answer.done():
                    answer.set_result(found.get(sha256))

    async def _lookup(self, sha256: str) -> _Stored | None:
        answer: asyncio.Future[_Stored | None] = asyncio.get_running_loop().create_future()
        self.lookups.append((sha256, answer))
        self.lookup_wanted.set()
        return await answer

    # -- progress

    def snapshot(self) -> DownloadProgress:
        r = self.report
        finished = r.done + r.duplicate + r.failed
        total = max(r.selected, finished)
        elapsed = time.monotonic() - self.started
        rate = finished / elapsed if elapsed > 0 else 0.0
        remaining = total - finished
        eta = remaining / rate if rate > 0 else None
        return DownloadProgress(r.done, r.duplicate, r.failed, remaining, total, elapsed, rate, eta)

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.snapshot())

    def _count(self, outcome: Outcome) -> None:
        r = self.report
        r.attempts += outcome.attempts
        if outcome.state is DownloadState.done:
            r.done += 1
        elif outcome.state is DownloadState.duplicate:
            r.duplicate += 1
        elif outcome.state is DownloadState.failed:
            r.failed += 1
            if len(r.failures) < MAX_REPORTED_FAILURES:
                r.failures.append((outcome.image_id, outcome.error or ""))

    async def _writer(self, prior: dict[int, int]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.db_write, self._report_progress)
        batch: list[tuple[Outcome, int]] = []
        last = time.monotonic()
        while True:
            item: object = _TICK
            if not self.results.empty():
                item = self.results.get_nowait()
            else:
                wait = max(0.0, self.config.batch_interval - (time.monotonic() - last))
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(self.results.get(), wait)
            ended = item is None
            if isinstance(item, Outcome):
                batch.append((item, prior.pop(item.image_id)))
                self._count(item)
            due = ended or time.monotonic() - last >= self.config.batch_interval
            if batch and (due or len(batch) >= self.config.batch_size):
                await loop.run_in_executor(self.db_write, self._commit, batch)
                batch = []
            if due:
                # Progress after the commit: what it reports is in the database.
                await loop.run_in_executor(self.db_write, self._report_progress)
                last = time.monotonic()
            if ended:
                return

    # -- files

    def _folder(self, folder: str) -> Path:
        path = self.data_dir / IMAGES_DIR / folder
        if folder not in self.folders:
            path.mkdir(parents=True, exist_ok=True)
            _sweep_stale_temps(path)
            self.folders.add(folder)
        return path

    async def _fetch(self, clients: _Clients, item: PendingImage) -> tuple[Path, str, int] | None:
        """Stream one photo into a temp file: (temp path, sha256, size), an exception, or None
        when a stop came while it waited for a connection (nothing was sent)."""
        host = (urlsplit(item.url).hostname or "").lower()
        per_host = self.hosts.get(host)
        if per_host is None:
            per_host = self.hosts[host] = asyncio.Semaphore(self.config.per_host)
        async with per_host:
            client = await clients.acquire(host)
            try:
                if self.stopping.is_set():
                    return None
                return await self._get(client, item)
            finally:
                clients.release(client, host)

    async def _get(self, client: httpx.AsyncClient, item: PendingImage) -> tuple[Path, str, int]:
        try:
            async with client.stream("GET", item.url) as response:
                return await self._receive(response, item)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__})") from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise _Permanent(f"bad URL ({exc})") from None
        except httpx.TooManyRedirects:
            raise _Permanent("too many redirects") from None
        except httpx.TransportError as exc:
            detail = f": {exc}" if str(exc) else ""
            raise _Retryable(f"connection failed ({type(exc).__name__}{detail})") from None

    async def _receive(self, response: httpx.Response, item: PendingImage) -> tuple[Path, str, int]:
        code = response.status_code
        if not (200 <= code < 300) or code in (204, 205, 206):
            if code in RETRY_STATUSES or code >= 500:
                delay = retry_after_seconds(response.headers.get("retry-after"))
                raise _Retryable(status_text(code), delay)
            raise _Permanent(status_text(code))
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.startswith("text/") or content_type in NOT_IMAGE_TYPES:
            raise _Permanent(f"not an image (the server sent {content_type})")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.config.max_bytes:
            raise _Permanent(f"too big ({int(length)} bytes; the limit is {self.config.max_bytes})")
        fd, name = tempfile.mkstemp(
            dir=self._folder(item.folder), prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX
        )
        tmp = Path(name)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in response.aiter_bytes(CHUNK_SIZE):
                    size += len(chunk)
                    if size > self.config.max_bytes:
                        raise _Permanent(f"too big (over {self.config.max_bytes} bytes)")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, digest.hexdigest(), size

    def _verify_and_place(self, tmp: Path, folder: str, sha256: str) -> tuple[ImageInfo, Path]:
        """Decode the temp file (ValueError says why it is no photo), move it to its
        content-addressed name and make its thumbnail. Runs on the CPU pool."""
        info = probe_image(tmp)
        suffix = FORMAT_SUFFIXES.get(info.format)
        if suffix is None:
            raise ValueError(f"not a photo format we keep ({info.format or 'unknown'})")
        relative = stored_path(folder, sha256, suffix)
        target = self.data_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)  # the same bytes, if a killed run had already put them there
        make_thumbnail(target, self.data_dir, sha256)
        return info, relative

    async def _same_bytes(self, sha256: str) -> _Stored | None:
        """The image these bytes are already stored for (in the database or by this run), or
        None when this caller should store them (it must claim them before its next await)."""
        while True:
            claim = self.claimed.get(sha256)
            if claim is None:
                found = await self._lookup(sha256)
                if found is not None:
                    if sha256 not in self.claimed:
                        self.claimed[sha256] = asyncio.get_running_loop().create_future()
                        self.claimed[sha256].set_result(found)
                    return found
                claim = self.claimed.get(sha256)  # claimed by another file while we looked?
                if claim is None:
                    return None
            stored = await asyncio.shield(claim)  # a cancelled waiter must not cancel the claim
            if stored is not None:
                return stored
            if self.claimed.get(sha256) is claim:  # its verification failed: try ourselves
                return None

    async def _store(
        self, item: PendingImage, tmp: Path, sha256: str, size: int, attempts: int
    ) -> Outcome:
        try:
            same = await self._same_bytes(sha256)
            if same is not None:
                other, width, height = same
                return Outcome(
                    item.id, DownloadState.duplicate, attempts, f"same photo as image {other}",
                    sha256=sha256, width=width, height=height, size_bytes=size,
                )  # fmt: skip
            claim: asyncio.Future[_Stored | None] = asyncio.get_running_loop().create_future()
            self.claimed[sha256] = claim
            try:
                info, relative = await asyncio.get_running_loop().run_in_executor(
                    self.cpu, self._verify_and_place, tmp, item.folder, sha256
                )
                claim.set_result((item.id, info.width, info.height))
            except ValueError as exc:
                return Outcome(item.id, DownloadState.failed, attempts, str(exc))
            finally:
                if not claim.done():  # failed or cancelled: a later copy verifies itself
                    claim.set_result(None)
            return Outcome(
                item.id, DownloadState.done, attempts, path=relative.as_posix(), sha256=sha256,
                width=info.width, height=info.height, size_bytes=size,
            )  # fmt: skip
        finally:
            tmp.unlink(missing_ok=True)

    async def _download(self, clients: _Clients, item: PendingImage) -> Outcome:
        attempts = 0
        while True:
            attempts += 1
            try:
                fetched = await self._fetch(clients, item)
            except _Permanent as exc:
                return Outcome(item.id, DownloadState.failed, attempts, str(exc))
            except _Retryable as exc:
                if attempts >= self.config.max_attempts:
                    reason = f"{exc} (gave up after {attempts} attempts)"
                    return Outcome(item.id, DownloadState.failed, attempts, reason)
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, self.config.retry_after_cap)
                else:
                    delay = backoff_delay(attempts, self.config, self.rng)
                self.report.retries += 1
                if await self._sleep_unless_stopped(delay):
                    return Outcome(item.id, DownloadState.pending, attempts)  # abandoned
                continue
            if fetched is None:
                return Outcome(item.id, DownloadState.pending, attempts - 1)  # abandoned
            return await self._store(item, *fetched, attempts)

    async def _one(self, clients: _Clients, item: PendingImage) -> None:
        try:
            outcome = await self._download(clients, item)
        finally:
            self.live.release()
        self.results.put_nowait(outcome)

    async def _items(self) -> AsyncIterator[PendingImage]:
        loop = asyncio.get_running_loop()
        after, taken = 0, 0
        while self.limit is None or taken < self.limit:
            size = PAGE_SIZE if self.limit is None else min(PAGE_SIZE, self.limit - taken)
            page = await loop.run_in_executor(self.db_read, self._read_page, after, size)
            if not page:
                return
            for item in page:
                yield item
            after, taken = page[-1].id, taken + len(page)

    async def _feed(
        self, group: asyncio.TaskGroup, clients: _Clients, prior: dict[int, int]
    ) -> set[asyncio.Task[None]]:
        tasks: set[asyncio.Task[None]] = set()
        async for item in self._items():
            if self._stop_requested():
                break
            await self.live.acquire()
            if self._stop_requested():
                self.live.release()
                break
            prior[item.id] = item.attempts
            task = group.create_task(self._one(clients, item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return tasks

    async def _drain(self, tasks: set[asyncio.Task[None]]) -> None:
        """Wait for the files in flight; after a stop, only `stop_grace` seconds."""
        stopped_at: float | None = None
        while tasks:
            await asyncio.wait(set(tasks), timeout=STOP_POLL_S)
            if stopped_at is None and self._stop_requested():
                stopped_at = time.monotonic()
            if stopped_at is not None and time.monotonic() - stopped_at >= self.config.stop_grace:
                for task in set(tasks):
                    task.cancel()  # its temp file goes with it; the image stays pending
                await asyncio.gather(*tasks, return_exceptions=True)
                return

    async def run(self) -> DownloadReport:
        prior: dict[int, int] = {}  # image id → attempts before this run
        finished = asyncio.Event()
        clients = _Clients(self.config)
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._writer(prior))
                group.create_task(self._watch_stop(finished))
                lookups = group.create_task(self._lookups())
                tasks = await self._feed(group, clients, prior)
                await self._drain(tasks)
                finished.set()
                lookups.cancel()
                self.results.put_nowait(None)
                await writer
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None
        finally:
            await clients.aclose()
            for pool in (self.cpu, self.db_read, self.db_write):
                pool.shutdown(wait=True, cancel_futures=True)
        r = self.report
        r.elapsed_s = time.monotonic() - self.started
        r.left = r.selected - r.done - r.duplicate - r.failed
        r.stopped = self.stopping.is_set()
        return r


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _sweep_stale_temps(folder: Path) -> None:
    cutoff = time.time() - STALE_TEMP_S
    for leftover in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            pass


async def download_images_async(
    settings: Settings,
    *,
    species_ids: Iterable[int] | None = None,
    retry_failed: bool = False,
    limit: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[DownloadProgress], None] | None = None,
    config: DownloadConfig | None = None,
    rng: random.Random | None = None,
) -> DownloadReport:
    """Download the selected pending images; see the module docstring for the rules.

    `should_stop` and `progress` are plain callables: `should_stop` runs on the event loop (keep
    it cheap), `progress` on the database writer's thread after each commit (it may block).
    """
    ids = None if species_ids is None else sorted(set(species_ids))
    if limit is not None and limit < 1:
        raise DownloadError("limit must be at least 1")
    loop = asyncio.get_running_loop()

    def plan() -> int:
        with Session(get_engine(settings.db_url)) as session:
            check_species(session, ids)
            return count_selected(session, ids, retry_failed, limit)

    total = await loop.run_in_executor(None, plan)
    downloader = _Downloader(
        settings.db_url,
        settings.data_dir,
        config or DownloadConfig.from_settings(settings),
        total=total,
        species_ids=ids,
        retry_failed=retry_failed,
        limit=limit,
        should_stop=should_stop,
        progress=progress,
        rng=rng,
    )
    return await downloader.run()


def download_images(settings: Settings, **options: Any) -> DownloadReport:
    """`download_images_async` for synchronous callers (a Celery task, the CLI, tests).

    Runs on uvloop where it is installed (it comes with uvicorn[standard]): the event loop is
    where a download spends most of its CPU, and uvloop's costs about half as much.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(download_images_async(settings, **options))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional (no Windows build)
        return None
    return uvloop.new_event_loop
