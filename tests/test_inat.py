"""iNaturalist open data: ingest into staging (both databases), selection, jobs, command line."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from inat_dump import (
    AMANITA,
    ASCO,
    BASIDIO,
    CORT_IN01,
    CORT_NAME,
    DELICIOSUS,
    EDULIS,
    ESCULENTA,
    GUESSOWII,
    HYPOXYLON,
    MUSCARIA,
    OLDNAME,
    RUSSULA_NAME,
    RUSSULA_NY02,
    Dump,
    fungi_dump,
)
from sqlmodel import Session, func, select
from support import wait_for

from app.config import Settings
from app.db import get_engine, session_scope
from app.models import (
    DownloadState,
    Image,
    InatObservation,
    InatObservationKey,
    InatObserver,
    InatPhoto,
    InatTaxon,
    Job,
    JobEvent,
    JobStatus,
    Species,
)
from app.services import dispatch, jobs
from app.services.inat import reader
from app.services.inat.ingest import IngestProgress, ingest_dump, staged_counts
from app.services.inat.params import DEFAULT_LICENSES, InatSelectParams
from app.services.inat.reader import DumpError, TsvTable
from app.services.inat.select import SelectionError, attribution, select_photos

BASE = "https://photos.example/open-data"
SPECIES_TAXA = {
    "Amanita muscaria": {MUSCARIA, GUESSOWII}, "Boletus edulis": {EDULIS},
    CORT_NAME: {CORT_IN01}, RUSSULA_NAME: {RUSSULA_NY02}, "Lactarius deliciosus": {DELICIOSUS},
    "Morchella esculenta": {ESCULENTA}, "Xylaria hypoxylon": {HYPOXYLON},
}  # fmt: skip


@pytest.fixture(scope="module")
def dump() -> Dump:
    return fungi_dump()


@pytest.fixture
def folder(dump: Dump, tmp_path: Path) -> Path:
    return dump.write(tmp_path / "dump")


@pytest.fixture
def staged(migrated: Settings, folder: Path) -> Settings:
    ingest_dump(get_engine(migrated.db_url), folder)
    return migrated


def _select(settings: Settings, **params: object):
    with session_scope(settings.db_url) as session:
        return select_photos(session, InatSelectParams(**params), base_url=BASE)


def _eligible(d: Dump, taxa: set[int], licenses=DEFAULT_LICENSES, per_observation=2) -> int:
    """The selection rule, spelled out plainly: research grade, licence, first K per obs."""
    total = 0
    for obs in d.observations:
        if obs.taxon_id in taxa and obs.quality_grade == "research":
            photos = [
                p for p in d.photos
                if p.observation_uuid == obs.uuid and p.license.lower() in licenses
            ]  # fmt: skip
            total += min(per_observation, len(photos))
    return total


def _rewrite(folder: Path, kind: str, change: Callable[[list[str]], list[str]]) -> None:
    """Edit one dump file's lines (header included), keeping it plain or gzipped."""
    path = next(p for p in (folder / f"{kind}.csv", folder / f"{kind}.csv.gz") if p.exists())
    gz = path.suffix == ".gz"
    text = gzip.decompress(path.read_bytes()).decode() if gz else path.read_text()
    new = "\n".join(change(text.splitlines())) + "\n"
    if gz:
        path.write_bytes(gzip.compress(new.encode()))
    else:
        path.write_text(new)


# --- ingest ----------------------------------------------------------------------------------


def test_ingest_keeps_the_fungi_subtree(migrated: Settings, dump: Dump, folder: Path) -> None:
    steps: list[IngestProgress] = []
    lines: list[str] = []
    report = ingest_dump(
        get_engine(migrated.db_url), folder, progress=steps.append, log=lines.append
    )
    expected = dump.kept({BASIDIO, ASCO})
    assert staged_counts(get_engine(migrated.db_url)) == expected
    assert expected == {"taxa": 17, "observations": 43, "photos": 135, "observers": 4}
    assert report.root_taxa == {"Basidiomycota": [BASIDIO], "Ascomycota": [ASCO]}
    assert {f["file"] for f in report.as_dict()["files"]} == {
        "taxa.csv", "observations.csv", "photos.csv.gz", "observers.csv",
    }  # fmt: skip
    assert report.files["photos"].rows_read == len(dump.photos)
    # Progress only moves forward, ends at 1; every file gets a summary line with its rate.
    fractions = [s.fraction for s in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(line.startswith("photos.csv.gz: read 197 rows, kept 135") for line in lines)
    assert all("rows/s" in line for line in lines[1:])

    with session_scope(migrated.db_url) as session:
        names = set(session.exec(select(InatTaxon.name)).all())
        people = {o.login: o.name for o in session.exec(select(InatObserver)).all()}
        oldname = session.get(InatTaxon, OLDNAME)
        observations = session.exec(select(InatObservation)).all()
        taxa_of_photos = session.exec(
            select(InatObservation.taxon_id).join(
                InatPhoto, InatPhoto.observation_uuid == InatObservation.observation_uuid
            )
        ).all()
    # The subtree only: no plants, no chytrids, not even the ancestors Fungi and Life.
    assert "Quercus robur" not in names and "Batrachochytrium dendrobatidis" not in names
    assert not names & {"Fungi", "Life", "Plantae", "Chytridiomycota"}
    assert {"Basidiomycota", "Ascomycota", "Amanita", "Amanita muscaria guessowii"} <= names
    # Quotes are data, kept literally.
    assert {CORT_NAME, RUSSULA_NAME} <= names
    assert people == {
        "obrien": "Seán O'Brien", "jdoe": 'Jane "Mycena" Doe', "login_only": None,
        "fourth": "Fourth Person",
    }  # fmt: skip
    assert oldname is not None and oldname.active is False  # staged; selection skips it
    assert {o.quality_grade for o in observations} == {"research", "needs_id", "casual"}
    assert all(o.observed_on is not None and o.observed_on.year == 2023 for o in observations)
    assert any(o.positional_accuracy is None for o in observations)  # empty field → NULL
    assert len(taxa_of_photos) == 135 and AMANITA in taxa_of_photos


def test_reingest_replaces_the_staging_data(staged: Settings, dump: Dump, folder: Path) -> None:
    engine = get_engine(staged.db_url)
    report = ingest_dump(engine, folder, root_taxa=[str(ASCO)])  # a taxon id works too
    assert report.root_taxa == {str(ASCO): [ASCO]}
    assert staged_counts(engine) == dump.kept({ASCO})
    assert staged_counts(engine)["photos"] == 7 * 5 + 2


def test_column_order_extra_columns_and_line_endings(
    migrated: Settings, dump: Dump, folder: Path
) -> None:
    """Columns are found by header name; unknown ones are ignored; CRLF and control
    characters are handled; the optional anomaly_score may be missing."""

    def reorder(lines: list[str]) -> list[str]:
        rows = [line.split("\t") for line in lines]
        return ["\t".join([*r[::-1], "extra"]) for r in rows]

    def drop_last_column(lines: list[str]) -> list[str]:
        return ["\t".join(line.split("\t")[:-1]) for line in lines]

    def crlf_and_control(lines: list[str]) -> list[str]:
        lines = [line + "\r" for line in lines]
        lines[1] = lines[1].replace("Seán", "Se\x01án")
        return [*lines, ""]  # and a blank line at the end

    _rewrite(folder, "photos", reorder)
    _rewrite(folder, "observations", drop_last_column)
    _rewrite(folder, "observers", crlf_and_control)
    report = ingest_dump(get_engine(migrated.db_url), folder)
    assert staged_counts(get_engine(migrated.db_url)) == dump.kept({BASIDIO, ASCO})
    assert report.files["observers"].sanitized == 1
    with session_scope(migrated.db_url) as session:
        photo = session.exec(select(InatPhoto).where(InatPhoto.photo_id == 5_000_001)).one()
        person = session.get(InatObserver, 1)
        assert session.exec(select(InatObservation.anomaly_score)).first() is None
    assert (photo.width, photo.height, photo.position, photo.extension) == (2048, 1536, 0, "jpg")
    assert person is not None and person.name == "Se\ufffdán O'Brien"


def _set_field(line: int, column: int, value: str) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        fields = lines[line].split("\t")
        fields[column] = value
        return [*lines[:line], "\t".join(fields), *lines[line + 1 :]]

    return change


BAD_DUMPS: dict[str, tuple[str, Callable[[list[str]], list[str]], str]] = {
    "missing column": (
        "observations",
        lambda ls: ["\t".join(x for i, x in enumerate(line.split("\t")) if i != 6) for line in ls],
        "observations.csv: missing column(s) quality_grade",
    ),
    "short line": (
        "photos",
        lambda ls: [*ls[:40], ls[40].rsplit("\t", 1)[0], *ls[41:]],
        "photos.csv.gz line 41: 8 tab-separated fields where the header has 9",
    ),
    "not an integer": (
        "taxa",
        _set_field(5, 0, "abc"),
        "taxa.csv line 6: column taxon_id: 'abc' is not an integer",
    ),
    "impossible date": (
        "observations",
        _set_field(9, 7, "2023-02-30"),
        "observations.csv line 10: column observed_on: '2023-02-30' is not a real date",
    ),
    "repeated key": (
        "photos",
        lambda ls: [*ls, ls[1]],
        "photos.csv.gz repeats a row key",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_DUMPS))
def test_malformed_file_is_a_clear_error_and_loads_nothing(
    staged: Settings, dump: Dump, folder: Path, case: str
) -> None:
    before = staged_counts(get_engine(staged.db_url))
    kind, change, message = BAD_DUMPS[case]
    _rewrite(folder, kind, change)
    with pytest.raises(DumpError) as caught:
        ingest_dump(get_engine(staged.db_url), folder)
    assert message in str(caught.value)
    assert staged_counts(get_engine(staged.db_url)) == before


def test_broken_gzip_files(staged: Settings, folder: Path) -> None:
    engine = get_engine(staged.db_url)
    before = staged_counts(engine)
    plain = folder / "observers.csv"
    (folder / "observers.csv.gz").write_bytes(plain.read_bytes())  # not gzip despite .gz
    plain.unlink()
    with pytest.raises(DumpError, match=r"observers\.csv\.gz is not a gzip file"):
        ingest_dump(engine, folder)
    photos = folder / "photos.csv.gz"
    photos.write_bytes(photos.read_bytes()[:-200])  # cut short
    with pytest.raises(DumpError, match=r"photos\.csv\.gz is damaged"):
        ingest_dump(engine, folder)
    assert staged_counts(engine) == before


def test_unknown_root_and_missing_files(staged: Settings, folder: Path) -> None:
    engine = get_engine(staged.db_url)
    with pytest.raises(DumpError, match=r"taxa\.csv has no taxon named 'Mycetozoa'"):
        ingest_dump(engine, folder, root_taxa=["Basidiomycota", "Mycetozoa"])
    (folder / "photos.csv.gz").unlink()
    with pytest.raises(DumpError, match=r"is not an iNaturalist open-data folder: it has no pho"):
        ingest_dump(engine, folder)


def test_an_error_raised_mid_copy_rolls_back_and_surfaces(
    staged: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled job raises inside the COPY stream: the same exception comes out, and the
    staging tables are as they were."""

    class Stop(Exception):
        pass

    def progress(step: IngestProgress) -> None:
        if step.stage.startswith("photos"):
            raise Stop

    monkeypatch.setattr(reader, "BATCH_ROWS", 10)
    monkeypatch.setattr(reader, "PROGRESS_EVERY", 10)
    engine = get_engine(staged.db_url)
    before = staged_counts(engine)
    with pytest.raises(Stop):
        ingest_dump(engine, folder, root_taxa=["Ascomycota"], progress=progress)
    assert staged_counts(engine) == before


def test_reader_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "observers.csv"
    path.write_text("observer_id\tlogin\tname\n1\ta\tA\n2\tb\n")
    with TsvTable(path, "observers") as table, pytest.raises(DumpError) as caught:
        list(table.rows())
    assert str(caught.value) == (
        "observers.csv line 3: 2 tab-separated fields where the header has 3"
    )
    path.write_bytes(b"observer_id\tlogin\tname\n1\ta\tA\n2\tb\t\xff\n")
    # Text is decoded ahead of the line being read: this may fail as early as the header.
    with (
        pytest.raises(DumpError, match=r"^observers\.csv line 3: is not UTF-8 text$"),
        TsvTable(path, "observers") as table,
    ):
        list(table.rows())
    path.write_text("")
    with pytest.raises(DumpError, match=r"observers\.csv is empty"):
        TsvTable(path, "observers")


# --- selection -------------------------------------------------------------------------------


def test_select_top_species(staged: Settings, dump: Dump) -> None:
    eligible = {name: _eligible(dump, taxa) for name, taxa in SPECIES_TAXA.items()}
    top3 = sorted((n for n in eligible if eligible[n]), key=lambda n: (-eligible[n], n))[:3]
    assert top3 == ["Amanita muscaria", "Morchella esculenta", "Boletus edulis"]

    report = _select(staged, top=3, per_species=8, per_observation=2)
    assert [s.name for s in report.species] == top3
    assert [s.eligible for s in report.species] == [eligible[n] for n in top3]
    assert [s.added for s in report.species] == [8, 8, 8]
    assert (report.species_created, report.images_added) == (3, 24)

    photos = {str(p.photo_id): p for p in dump.photos}
    observers = dump.observers
    with session_scope(staged.db_url) as session:
        species = {s.id: s for s in session.exec(select(Species)).all()}
        images = session.exec(select(Image)).all()
        keys = dict(
            session.exec(select(InatObservationKey.id, InatObservationKey.observation_uuid)).all()
        )
    assert {s.scientific_name: s.inat_taxon_id for s in species.values()} == {
        "Amanita muscaria": MUSCARIA, "Morchella esculenta": ESCULENTA, "Boletus edulis": EDULIS,
    }  # fmt: skip
    amanita = next(s for s in species.values() if s.inat_taxon_id == MUSCARIA)
    assert amanita.rank == "species" and amanita.ancestry == dump.taxa[MUSCARIA].ancestry
    for image in images:
        photo = photos[image.source_ref]
        assert image.source == "inat" and image.download_state == DownloadState.pending
        assert image.source_url == f"{BASE}/photos/{photo.photo_id}/medium.jpg"
        assert image.license == photo.license and photo.license.lower() in DEFAULT_LICENSES
        assert keys[image.observation_id] == photo.observation_uuid
        assert image.observer_id == photo.observer_id
        login, name = observers[photo.observer_id]
        assert image.attribution == attribution(photo.license, name, login, photo.observer_id)
        assert image.path is None
    per_observation = Counter(image.observation_id for image in images)
    assert max(per_observation.values()) <= 2
    # The first photo of every observation comes before the second of any.
    amanita_obs = {i.observation_id for i in images if i.species_id == amanita.id}
    assert len(amanita_obs) == 8

    again = _select(staged, top=3, per_species=8, per_observation=2)
    assert again.images_added == 0 and again.species_created == 0
    more = _select(staged, top=3, per_species=12, per_observation=2)
    assert [s.added for s in more.species] == [4, 4, 2]  # Boletus edulis has only 10
    with session_scope(staged.db_url) as session:
        refs = session.exec(select(Image.source_ref)).all()
        assert session.exec(select(func.count()).select_from(Species)).one() == 3
    assert len(refs) == len(set(refs)) == 24 + 10


def test_select_named_species_with_quotes_and_licence_filter(staged: Settings) -> None:
    report = _select(
        staged, species=[CORT_NAME, RUSSULA_NAME.upper(), "Boletus edulis"], licenses=["cc0"]
    )
    by_name = {s.name: s for s in report.species}
    assert set(by_name) == {CORT_NAME, RUSSULA_NAME, "Boletus edulis"}
    assert by_name[CORT_NAME].added == 6  # 3 observations x 2 CC0 photos
    assert by_name[RUSSULA_NAME].added == 0  # only CC-BY-NC photos
    assert f"{RUSSULA_NAME}: no photo passes the filters" in report.warnings
    with session_scope(staged.db_url) as session:
        images = session.exec(select(Image)).all()
        names = set(session.exec(select(Species.scientific_name)).all())
    assert names == {CORT_NAME, RUSSULA_NAME, "Boletus edulis"}  # quotes kept literally
    assert {i.license for i in images} == {"CC0"}
    assert {i.attribution for i in images} == {'(c) Jane "Mycena" Doe, no rights reserved (CC0)'}


def test_varieties_count_as_their_species(staged: Settings, dump: Dump) -> None:
    with_variety = _select(staged, species=["Amanita muscaria"], per_species=1)
    assert with_variety.species[0].eligible == _eligible(dump, {MUSCARIA, GUESSOWII})
    alone = _select(
        staged, species=["Amanita muscaria"], per_species=1, include_infraspecific=False
    )
    assert alone.species[0].eligible == _eligible(dump, {MUSCARIA})
    assert with_variety.species[0].eligible - alone.species[0].eligible == 12


def test_select_links_an_existing_species_by_name(staged: Settings) -> None:
    with session_scope(staged.db_url) as session:
        session.add(Species(scientific_name="Boletus edulis"))  # e.g. from a folder import
    report = _select(staged, species=["Boletus edulis"], per_species=3)
    assert (report.species_linked, report.species_created, report.images_added) == (1, 0, 3)
    with session_scope(staged.db_url) as session:
        only = session.exec(select(Species)).one()
    assert only.inat_taxon_id == EDULIS


def test_selection_errors(migrated: Settings, folder: Path) -> None:
    with pytest.raises(SelectionError, match="no iNaturalist data has been ingested"):
        _select(migrated)
    ingest_dump(get_engine(migrated.db_url), folder)
    with pytest.raises(SelectionError) as caught:
        _select(migrated, species=["Amanita oldname", "Amanita", "Nope nope", "Boletus edulis"])
    message = str(caught.value)
    assert "'Amanita oldname' (an inactive name" in message
    assert "'Amanita' (a genus, not a species)" in message
    assert "'Nope nope' (no taxon of that name was ingested)" in message
    assert "Boletus" not in message
    with pytest.raises(SelectionError, match="no staged photo passes the filters"):
        _select(migrated, quality_grades=["casual"], licenses=["cc-by-nd"])
    with session_scope(migrated.db_url) as session:  # errors change nothing
        assert session.exec(select(Species)).first() is None


def test_attribution_forms() -> None:
    assert attribution("CC-BY-NC", "Jane Doe", "jd", 7) == (
        "(c) Jane Doe, some rights reserved (CC BY-NC)"
    )
    assert attribution("CC-BY-NC-SA", "", "jd", 7) == "(c) jd, some rights reserved (CC BY-NC-SA)"
    assert attribution("cc0", None, None, 7) == ("(c) iNaturalist user 7, no rights reserved (CC0)")
    assert attribution(None, "X", None, None) == "(c) X, all rights reserved"


# --- job parameters ----------------------------------------------------------------------------


def test_job_parameters_are_checked(folder: Path, tmp_path: Path) -> None:
    queue, clean = jobs.validate_params("inat-ingest", None, {"directory": str(folder)})
    assert queue == "io"
    assert clean == {
        "directory": str(folder.resolve()),
        "root_taxa": ["Basidiomycota", "Ascomycota"],
    }
    with pytest.raises(jobs.JobError, match="does not exist") as caught:
        jobs.validate_params("inat-ingest", None, {"directory": str(tmp_path / "nowhere")})
    assert caught.value.status_code == 422
    (folder / "photos.csv.gz").unlink()
    with pytest.raises(jobs.JobError, match=r"it has no photos\.csv"):
        jobs.validate_params("inat-ingest", None, {"directory": str(folder)})
    with pytest.raises(jobs.JobError, match="a inat-ingest job runs on queue io"):
        jobs.validate_params("inat-ingest", "gpu", {"directory": str(folder)})

    _, clean = jobs.validate_params("inat-select", None, {"licenses": ["CC-BY", "cc0"]})
    assert clean["licenses"] == ["cc-by", "cc0"]
    assert (clean["per_species"], clean["per_observation"], clean["photo_size"]) == (
        200, 2, "medium",
    )  # fmt: skip
    for bad, fragment in [
        ({"licenses": ["cc-by-xx"]}, "unknown licence(s) cc-by-xx"),
        ({"photo_size": "huge"}, "photo_size"),
        ({"per_observation": 0}, "per_observation"),
        ({"species": ["  "]}, "an empty species name"),
        ({"quality_grades": ["great"]}, "quality_grades"),
    ]:
        with pytest.raises(jobs.JobError, match="invalid parameters") as caught:
            jobs.validate_params("inat-select", None, bad)
        assert fragment in str(caught.value)


# --- through a real worker, and the command line --------------------------------------------


def _finished(settings: Settings, job_id: int) -> Job | None:
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job if JobStatus(job.status).finished else None


@pytest.mark.integration
def test_ingest_and_select_jobs_on_a_worker(
    pg_settings: Settings, folder: Path, start_worker: Callable
) -> None:
    from app.services import migrations

    migrations.upgrade(pg_settings.db_url)
    worker = start_worker(pg_settings, "io", name="io@inat")

    def run(kind: str, **params: object) -> Job:
        with session_scope(pg_settings.db_url) as session:
            job_id = dispatch.submit(session, pg_settings, kind, params=params).id
        return wait_for(lambda: _finished(pg_settings, job_id), 60, what=kind)

    ingest = run("inat-ingest", directory=str(folder))
    assert ingest.status == JobStatus.succeeded, (ingest.error, worker.output())
    assert (ingest.result["photos"], ingest.result["observations"]) == (135, 43)
    chosen = run("inat-select", top=2, per_species=5)
    assert chosen.status == JobStatus.succeeded, chosen.error
    assert chosen.result["images_added"] == 10
    with session_scope(pg_settings.db_url) as session:
        events = session.exec(select(JobEvent).where(JobEvent.job_id == ingest.id)).all()
        assert session.exec(select(func.count()).select_from(Image)).one() == 10
    logs = [e.message for e in events if e.kind == "log"]
    assert any(m.startswith("photos.csv.gz: read 197 rows, kept 135") for m in logs)
    assert [e.data["progress"] for e in events if e.kind == "progress"][-1] == 1.0

    _rewrite(folder, "taxa", lambda ls: [*ls, "12\tbad/ancestry\t10\tspecies\tX\ttrue"])
    failed = run("inat-ingest", directory=str(folder))
    assert failed.status == JobStatus.failed
    assert "taxa.csv line 25: column ancestry: 'bad/ancestry' is not taxon ids" in failed.error
    with session_scope(pg_settings.db_url) as session:
        assert session.exec(select(func.count()).select_from(InatPhoto)).one() == 135


def test_command_line(sqlite_settings: Settings, folder: Path) -> None:
    from test_cli import run_cli

    env = {"SPOREPRINT_DATA_DIR": str(sqlite_settings.data_dir)}
    assert run_cli("migrate", env=env).returncode == 0
    done = run_cli(
        "inat", "ingest", str(folder), "--root-taxa", "Basidiomycota,Ascomycota", env=env
    )
    assert done.returncode == 0, done.stderr
    assert "staged 17 taxa, 43 observations, 135 photos and 4 observers" in done.stdout
    assert "photos.csv.gz: read 197 rows, kept 135" in done.stderr
    chosen = run_cli("inat", "select", "--top", "2", "--per-species", "3", "-l", "cc-by", env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert "Amanita muscaria" in chosen.stdout and "6 photos queued for download" in chosen.stdout
    bad = run_cli("inat", "select", "--species", "Nope nope", env=env)
    assert bad.returncode == 2
    assert "error: not an active species in the ingested iNaturalist taxa: 'Nope nope'" in (
        bad.stderr
    )
    with Session(get_engine(sqlite_settings.db_url)) as session:
        assert session.exec(select(func.count()).select_from(Image)).one() == 6


@pytest.mark.integration
def test_from_dump_to_photos_on_disk(
    pg_settings: Settings, folder: Path, start_worker: Callable, tmp_path: Path
) -> None:
    """The whole road in: ingest → selection → download from a (local) photo host."""
    import io

    from photohost import PhotoHost, Route
    from PIL import Image as PILImage

    from app.models import DownloadState
    from app.services import migrations

    with PhotoHost() as host:
        settings = pg_settings.model_copy(update={"inat_photo_base_url": host.url("")})
        migrations.upgrade(settings.db_url)
        start_worker(settings, "io", name="io@road")

        def run(kind: str, **params: object) -> Job:
            with session_scope(settings.db_url) as session:
                job_id = dispatch.submit(session, settings, kind, params=params).id
            return wait_for(lambda: _finished(settings, job_id), 90, what=kind)

        assert run("inat-ingest", directory=str(folder)).status == JobStatus.succeeded
        assert run("inat-select", top=3, per_species=4).status == JobStatus.succeeded
        with session_scope(settings.db_url) as session:
            urls = sorted(session.exec(select(Image.source_url)).all())
        assert urls and all(u.startswith(host.url("/photos/")) for u in urls)

        def jpeg(shade: int) -> bytes:
            out = io.BytesIO()
            PILImage.new("RGB", (48, 40), (shade, 90, 40)).save(out, "JPEG")
            return out.getvalue()

        missing, truncated, *good = urls
        host.add(missing.removeprefix(host.url("")), Route(status=404))
        host.add(truncated.removeprefix(host.url("")), Route(body=jpeg(1)[:120]))
        for shade, url in enumerate(good, start=2):
            host.add(url.removeprefix(host.url("")), Route(body=jpeg(shade * 9)))

        done = run("download")
        assert done.status == JobStatus.succeeded, done.error

    with session_scope(settings.db_url) as session:
        images = {i.source_url: i for i in session.exec(select(Image)).all()}
    assert images[missing].download_state == DownloadState.failed
    assert "404" in images[missing].download_error
    assert images[truncated].download_state == DownloadState.failed
    assert all(images[u].download_state == DownloadState.done for u in good)
    assert all((settings.data_dir / images[u].path).is_file() for u in good)
    leftovers = [p for p in settings.data_dir.rglob("*.part")]
    assert leftovers == []
