"""Photo download throughput: the async downloader vs 10 threads of blocking `requests.get`.

The local photo host (`tests/photohost.py`, in its own process so its threads do not share a
GIL with the client) serves N small JPEGs with a fixed latency added to every request. Both
download all of them, one after the other, in the same run:

- **ours**: `app.services.download` with concurrency 32 (and 32 per host: every photo comes
  from one host here), into a fresh single-machine data directory (SQLite), with everything a
  real run does: stream to a temp file, sha256, Pillow verification, atomic rename, WebP
  thumbnail, batched database rows;
- **baseline**: what the old script did, 10 threads each calling `requests.get(url)` and
  writing the bytes to a file (no verification, no thumbnail, no database).

`efficiency` = ours / (concurrency / latency), the share of the ideal pipelined rate. The ratio's
ceiling is concurrency over threads (3.2) when the latency is per request only; a second
scenario also charges one round trip per new TCP connection (`handshake`), as a real network
does, which is where keep-alive pays. Prints one JSON line.

    .venv/bin/python bench/download.py [--images 600] [--latency 0.05] [--postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image as PILImage
from sqlalchemy import func
from sqlmodel import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgtemp import temporary_database  # noqa: E402

from app.config import Settings  # noqa: E402
from app.db import dispose_engines, session_scope  # noqa: E402
from app.models import Image, ImageSource, Species  # noqa: E402
from app.services import migrations  # noqa: E402
from app.services.download import DownloadConfig, download_images  # noqa: E402

CONCURRENCY = 32
THREADS = 10
WARM_UP = 40  # photos fetched untimed first, by each side


def make_photos(folder: Path, count: int, seed: int = 0) -> list[str]:
    """`count` distinct small JPEGs (96x72, a gradient plus noise, ~4-8 KB each)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = []
    for i in range(count):
        base = PILImage.linear_gradient("L").resize((96, 72)).convert("RGB")
        noise = PILImage.frombytes("RGB", (96, 72), rng.randbytes(96 * 72 * 3))
        out = io.BytesIO()
        PILImage.blend(base, noise, 0.3).save(out, "JPEG", quality=85)
        name = f"{i:05d}.jpg"
        (folder / name).write_bytes(out.getvalue())
        names.append(name)
    return names


class Host:
    """tests/photohost.py in a subprocess; stops when its stdin closes."""

    def __init__(self, root: Path, latency: float, handshake: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "photohost.py"), "--root", str(root),
             "--latency", str(latency), "--handshake", str(handshake)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def stats(self) -> dict:
        return requests.get(f"{self.base}/_hits", timeout=10).json()

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


def run_ours(settings: Settings, urls: list[str], host: Host | None = None) -> dict[str, float]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        species = Species(scientific_name=f"Benchmarkus {uuid.uuid4().hex[:6]}")
        session.add(species)
        session.flush()
        session.add_all(
            Image(species_id=species.id, source=ImageSource.inat, source_ref=url, source_url=url)
            for url in urls
        )
    config = DownloadConfig(concurrency=CONCURRENCY, per_host=CONCURRENCY)
    host_cpu = host.cpu_s() if host else 0.0
    cpu, started = time.process_time(), time.perf_counter()
    report = download_images(settings, config=config)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    host_cpu = (host.cpu_s() if host else 0.0) - host_cpu
    assert report.done == len(urls), report.as_dict()
    with session_scope(settings.db_url) as session:
        done = session.exec(
            select(func.count()).select_from(Image).where(Image.download_state == "done")
        ).one()
    assert done >= len(urls)
    return {
        "images_per_s": round(len(urls) / elapsed, 1),
        "seconds": round(elapsed, 3),
        # CPU per photo: ours (all threads) and the photo host's; on a small machine their sum
        # bounds the rate at cpus / cpu, whatever the latency.
        "cpu_ms_per_image": round(cpu * 1000 / len(urls), 2),
        "host_cpu_ms_per_image": round(host_cpu * 1000 / len(urls), 2),
    }


def run_baseline(urls: list[str], folder: Path) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)

    def fetch(job: tuple[int, str]) -> None:
        index, url = job
        response = requests.get(url, timeout=30)
        response.raise_for_status()
        (folder / f"{index:05d}.jpg").write_bytes(response.content)

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(fetch, enumerate(urls)))
    elapsed = time.perf_counter() - started
    return {"images_per_s": round(len(urls) / elapsed, 1), "seconds": round(elapsed, 3)}


def scenario(
    tmp: Path, photos: Path, names: list[str], latency: float, handshake: float, db_url: str | None
) -> dict:
    tag = "handshake" if handshake else "plain"
    host = Host(photos, latency, handshake)
    try:
        urls = [f"{host.base}/{name}" for name in names]
        settings = Settings(_env_file=None, data_dir=tmp / f"ours-{tag}", database_url=db_url)
        # Warm up (imports, Pillow plugins, SQL caches) on a few photos, then time the rest.
        run_ours(settings.model_copy(update={"data_dir": tmp / f"warm-{tag}"}), urls[:WARM_UP])
        opened = host.stats()["connections"]
        ours = run_ours(settings, urls[WARM_UP:], host)
        ours["connections"] = host.stats()["connections"] - opened - 1  # less our own /_hits
    finally:
        host.close()
    host = Host(photos, latency, handshake)  # a fresh host: its counters are the baseline's
    try:
        urls = [f"{host.base}/{name}" for name in names]
        run_baseline(urls[:WARM_UP], tmp / f"warm-baseline-{tag}")
        opened = host.stats()["connections"]
        baseline = run_baseline(urls[WARM_UP:], tmp / f"baseline-{tag}")
        baseline["connections"] = host.stats()["connections"] - opened - 1
    finally:
        host.close()
    ideal = CONCURRENCY / latency  # with keep-alive, a photo costs one round trip
    cpu_ms = ours["cpu_ms_per_image"] + ours["host_cpu_ms_per_image"]
    ours["cpu_ceiling_images_per_s"] = round((os.cpu_count() or 1) * 1000 / cpu_ms, 1)
    return {
        "ours": ours,
        "baseline_requests_10_threads": baseline,
        "ratio": round(ours["images_per_s"] / baseline["images_per_s"], 2),
        "efficiency": round(ours["images_per_s"] / ideal, 3),
    }


@contextlib.contextmanager
def database(postgres: bool) -> Iterator[str | None]:
    """A fresh PostgreSQL database (dropped afterwards), or None for the data dir's SQLite."""
    if not postgres:
        yield None
        return
    with temporary_database() as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added per request")
    parser.add_argument(
        "--postgres", action="store_true", help="ours writes to PostgreSQL, not SQLite"
    )
    args = parser.parse_args()

    load = os.getloadavg()[0]  # other work on the machine skews every figure here
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        names = make_photos(tmp / "photos", args.images)
        # Each scenario gets its own database: the same photos again would all be duplicates.
        with database(args.postgres) as db_url:
            plain = scenario(tmp, tmp / "photos", names, args.latency, 0.0, db_url)
        with database(args.postgres) as db_url:
            shaken = scenario(tmp, tmp / "photos", names, args.latency, args.latency, db_url)
        dispose_engines()
    print(json.dumps({
        "bench": "download", "images": args.images - WARM_UP, "warm_up_images": WARM_UP,
        "latency_s": args.latency,
        "concurrency": CONCURRENCY, "per_host": CONCURRENCY, "baseline_threads": THREADS,
        "database": "postgresql" if args.postgres else "sqlite", "cpus": os.cpu_count(),
        "load_average_before": round(load, 2),
        "ours_images_per_s": plain["ours"]["images_per_s"],
        "baseline_images_per_s": plain["baseline_requests_10_threads"]["images_per_s"],
        "ratio": plain["ratio"], "ratio_goal": 4.0,
        "ratio_ceiling": round(CONCURRENCY / THREADS, 2),
        "efficiency": plain["efficiency"], "efficiency_goal": 0.8,
        "per_request_latency": plain, "with_handshake_rtt": shaken,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
