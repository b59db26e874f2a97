"""`sporeprint inat …`: the iNaturalist open-data ingest and selection, run right here.

The same services as the `inat-ingest` and `inat-select` jobs, without a worker: handy for a
first load of a big dump on the database machine, with a progress bar in the terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.services.inat.params import (
    DEFAULT_LICENSES,
    DEFAULT_ROOT_TAXA,
    LICENSES,
    InatIngestParams,
    InatSelectParams,
)

inat = typer.Typer(
    name="inat",
    help=(
        "iNaturalist open data: load the metadata dump (taxa, observations, photos, observers) "
        "into staging tables, then choose species and photos to download. "
        "Get the dump from https://github.com/inaturalist/inaturalist-open-data."
    ),
    no_args_is_help=True,
    add_completion=False,
)
out = Console(soft_wrap=True)


def _split(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated lists, both."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'options'}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def _ready() -> str:
    """Settings checked and the schema current; returns the database URL."""
    from app import cli as main
    from app.services import preflight

    settings = main._settings()
    with main._startup_errors():
        preflight.check_database(settings)
        preflight.check_schema(settings)
    return settings.db_url


@inat.command(
    help="Load an open-data dump into the staging tables, replacing what an earlier ingest "
    "left.\n\nOnly the subtree under the root taxa is kept (with its observations, their photos "
    "and observers), so a full dump never lands on disk in full. A malformed line stops the "
    "ingest with its file and line number, and nothing changes."
)
def ingest(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Folder with taxa.csv, observations.csv, photos.csv and observers.csv "
            "(tab-separated; each may be gzipped as .csv.gz).",
            show_default=False,
        ),
    ],
    root_taxa: Annotated[
        list[str] | None,
        typer.Option(
            "--root-taxa",
            "-r",
            help="Keep only these taxa and everything under them: scientific names or taxon "
            f"ids; repeat the option or separate with commas (default: "
            f"{', '.join(DEFAULT_ROOT_TAXA)}).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Load an open-data dump into the staging tables."""
    from app import cli as main
    from app.db import get_engine
    from app.services.inat.ingest import IngestProgress, ingest_dump
    from app.services.inat.reader import DumpError

    try:
        params = InatIngestParams(
            directory=str(directory), root_taxa=_split(root_taxa) or list(DEFAULT_ROOT_TAXA)
        )
    except ValidationError as exc:
        raise main._fail(_problems(exc)) from None
    url = _ready()
    columns = (
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=main.console, transient=True) as bar:
        task = bar.add_task("starting", total=1.0)

        def progress(step: IngestProgress) -> None:
            bar.update(task, completed=step.fraction, description=step.text)

        try:
            report = ingest_dump(
                get_engine(url), params.directory, root_taxa=params.root_taxa,
                progress=progress, log=lambda line: bar.console.print(line, highlight=False),
            )  # fmt: skip
        except DumpError as exc:
            raise main._fail(str(exc)) from None
    out.print(
        f"staged {report.kept('taxa'):,} taxa, {report.kept('observations'):,} observations, "
        f"{report.kept('photos'):,} photos and {report.kept('observers'):,} observers "
        f"in {report.seconds:.1f} s; next: sporeprint inat select",
        highlight=False,
    )


@inat.command(
    "select",
    help="Choose species and photos from the staged dump and queue them for download.\n\n"
    "Adds species and pending images (source inat) with each photo's URL, licence and "
    "attribution. Running it again adds only what is missing.",
)
def select_command(
    species: Annotated[
        list[str] | None,
        typer.Option(
            "--species",
            "-s",
            help="A scientific name to take (repeat for more). Without any, the --top species "
            "with the most eligible photos are taken.",
            show_default=False,
        ),
    ] = None,
    species_file: Annotated[
        Path | None,
        typer.Option(
            help="A text file of scientific names, one a line (# starts a comment).",
            exists=True,
            dir_okay=False,
            readable=True,
            show_default=False,
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="How many species, when none are named.", min=1)] = 100,
    per_species: Annotated[
        int, typer.Option(help="Photos per species, in all (a rerun only tops up).", min=1)
    ] = 200,
    per_observation: Annotated[
        int, typer.Option(help="At most this many photos of any one observation.", min=1)
    ] = 2,
    license: Annotated[
        list[str] | None,
        typer.Option(
            "--license",
            "-l",
            help=f"Accepted licence (repeat, or separate with commas), of {', '.join(LICENSES)}. "
            f"(default: {', '.join(DEFAULT_LICENSES)}: all but NoDerivatives).",
            show_default=False,
        ),
    ] = None,
    size: Annotated[
        str,
        typer.Option(help="Photo size: original, large, medium, small, thumb or square."),
    ] = "medium",
    grade: Annotated[
        list[str] | None,
        typer.Option(
            help="Observation quality grade: research, needs_id, casual (repeat for more). "
            "(default: research).",
            show_default=False,
        ),
    ] = None,
    infraspecific: Annotated[
        bool,
        typer.Option(
            "--infraspecific/--no-infraspecific",
            help="Count subspecies, varieties and forms as their species.",
        ),
    ] = True,
) -> None:
    """Choose species and photos from the staged dump."""
    from app import cli as main
    from app.config import get_settings
    from app.db import session_scope
    from app.services.inat.select import SelectionError, select_photos

    names = list(species or [])  # not split at commas: a name is taken whole
    if species_file is not None:
        lines = species_file.read_text(encoding="utf-8").splitlines()
        names += [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
    try:
        params = InatSelectParams(
            species=names, top=top, per_species=per_species, per_observation=per_observation,
            licenses=_split(license) or list(DEFAULT_LICENSES), photo_size=size,
            quality_grades=_split(grade) or ["research"],
            include_infraspecific=infraspecific,
        )  # fmt: skip
    except ValidationError as exc:
        raise main._fail(_problems(exc)) from None
    url = _ready()
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=main.console, transient=True) as bar:
        task = bar.add_task("counting eligible photos", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        try:
            with session_scope(url) as session:
                report = select_photos(
                    session, params, base_url=get_settings().inat_photo_base_url,
                    progress=progress,
                )  # fmt: skip
        except SelectionError as exc:
            raise main._fail(str(exc)) from None
    table = Table("species", "taxon", "eligible", "added", "total", title="iNaturalist selection")
    for row in report.species:
        table.add_row(
            row.name, str(row.taxon_id), f"{row.eligible:,}", f"{row.added:,}", f"{row.total:,}"
        )
    out.print(table)
    for warning in report.warnings:
        main.console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(
        f"{len(report.species)} species ({report.species_created} new, "
        f"{report.species_linked} linked by name); {report.images_added:,} photos queued for "
        "download",
        highlight=False,
    )
