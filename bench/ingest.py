"""iNaturalist ingest: our streaming COPY path against pandas `read_csv(...).to_sql(...)`.

Writes a synthetic open-data dump into a temporary folder: a 1,000,000-row photos.csv (4 photos
per observation) with the taxa, observations and observers it refers to, all under
Basidiomycota so that every photo row is kept. Then, in the same run and the same fresh
PostgreSQL database:

- ours: `ingest_dump`, which validates every line, filters by the taxa subtree and streams the
  rows through `COPY … FROM STDIN`; timed for photos.csv (read + check + filter + COPY) plus
  the rebuild of the photos table's key and its statistics (ANALYZE) afterwards;
- pandas: `pandas.read_csv(photos.csv, sep="\\t", quoting=QUOTE_NONE).to_sql(...)` into a
  plain table (no checks, no filter, no key), pandas' default insert method.

Prints one JSON line; the ratio is ours over pandas in photo rows per second (goal: >= 10).

    .venv/bin/pip install -e '.[bench]'   # pandas
    .venv/bin/python bench/ingest.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgtemp import temporary_database  # noqa: E402

from app.db import get_engine  # noqa: E402
from app.services import migrations  # noqa: E402
from app.services.inat.ingest import ingest_dump  # noqa: E402

PHOTOS_PER_OBSERVATION = 4
SPECIES = 500
OBSERVERS = 20_000
LICENSES = ["CC-BY-NC", "CC-BY", "CC0", "CC-BY-SA", "CC-BY-NC-SA", "CC-BY-ND", "CC-BY-NC-ND"]


def write_dump(folder: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    def a_uuid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    with (folder / "taxa.csv").open("w") as out:
        out.write("taxon_id\tancestry\trank_level\trank\tname\tactive\n")
        out.write("48460\t\t100\tstateofmatter\tLife\ttrue\n")
        out.write("47170\t48460\t70\tkingdom\tFungi\ttrue\n")
        out.write("47169\t48460/47170\t60\tphylum\tBasidiomycota\ttrue\n")
        for i in range(SPECIES):
            out.write(f"{100000 + i}\t48460/47170/47169\t10\tspecies\tFungus o'specie {i}\ttrue\n")
    with (folder / "observers.csv").open("w") as out:
        out.write("observer_id\tlogin\tname\n")
        for i in range(1, OBSERVERS + 1):
            out.write(f'{i}\tuser{i}\tPerson "{i}" O\'Name\n')
    observations = rows // PHOTOS_PER_OBSERVATION
    with (
        (folder / "observations.csv").open("w") as obs_out,
        (folder / "photos.csv").open("w") as photo_out,
    ):
        obs_out.write(
            "observation_uuid\tobserver_id\tlatitude\tlongitude\tpositional_accuracy\ttaxon_id\t"
            "quality_grade\tobserved_on\tanomaly_score\n"
        )
        photo_out.write(
            "photo_uuid\tphoto_id\tobservation_uuid\tobserver_id\textension\tlicense\twidth\t"
            "height\tposition\n"
        )
        photo_id = 10_000_000
        for n in range(observations):
            obs, observer = a_uuid(), rng.randint(1, OBSERVERS)
            obs_out.write(
                f"{obs}\t{observer}\t{rng.uniform(-60, 70):.6f}\t{rng.uniform(-180, 180):.6f}\t"
                f"{rng.randint(1, 500)}\t{100000 + n % SPECIES}\tresearch\t2023-05-17\t\n"
            )
            for position in range(PHOTOS_PER_OBSERVATION):
                photo_id += 1
                photo_out.write(
                    f"{a_uuid()}\t{photo_id}\t{obs}\t{observer}\tjpg\t"
                    f"{LICENSES[photo_id % len(LICENSES)]}\t{rng.randint(400, 2048)}\t"
                    f"{rng.randint(400, 2048)}\t{position}\n"
                )


def ours(url: str, folder: Path) -> dict[str, float]:
    migrations.upgrade(url)
    started = time.perf_counter()
    report = ingest_dump(get_engine(url), folder, root_taxa=["Basidiomycota"])
    total = time.perf_counter() - started
    photos = report.files["photos"]
    seconds = photos.seconds + photos.finish_seconds
    return {
        "photo_rows": photos.rows_kept,
        "seconds": round(seconds, 3),
        "rows_per_s": round(photos.rows_read / seconds),
        "read_check_filter_copy_s": round(photos.seconds, 3),
        "rebuild_key_and_analyze_s": round(photos.finish_seconds, 3),
        "whole_dump_s": round(total, 3),
        "whole_dump_rows": sum(f.rows_read for f in report.files.values()),
    }


def pandas_peer(url: str, folder: Path) -> dict[str, float]:
    import pandas as pd

    engine = create_engine(url)
    started = time.perf_counter()
    frame = pd.read_csv(folder / "photos.csv", sep="\t", quoting=csv.QUOTE_NONE)
    read = time.perf_counter()
    frame.to_sql("bench_pandas_photos", engine, if_exists="replace", index=False)
    done = time.perf_counter()
    engine.dispose()
    return {
        "photo_rows": len(frame),
        "seconds": round(done - started, 3),
        "rows_per_s": round(len(frame) / (done - started)),
        "read_csv_s": round(read - started, 3),
        "to_sql_s": round(done - read, 3),
        "pandas": pd.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of photos.csv")
    args = parser.parse_args()

    with temporary_database() as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_dump(folder, args.rows)
        size_mb = (folder / "photos.csv").stat().st_size / 1e6
        copy = ours(url, folder)
        peer = pandas_peer(url, folder)
    print(json.dumps({
        "bench": "inat_ingest", "photos_csv_rows": args.rows, "photos_csv_mb": round(size_mb, 1),
        "ours_copy": copy, "pandas_to_sql": peer,
        "ratio_ours_over_pandas_rows_per_s": round(copy["rows_per_s"] / peer["rows_per_s"], 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
