"""`sporeprint curate`: the curation rule (app/services/curation.py) run right here, no worker."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


def curate(
    species: Annotated[
        list[str] | None,
        typer.Option("--species", help="Scientific name to curate (repeat; default: all)."),
    ] = None,
    min_samples: Annotated[int, typer.Option(help="DBSCAN min_samples (k of the k-distance).")] = 5,
    eps: Annotated[
        float | None, typer.Option(help="DBSCAN eps (default: the knee of the k-distance curve).")
    ] = None,
    pca: Annotated[
        int | None, typer.Option(help="Reduce the standardised features to this many components.")
    ] = None,
    extractor: Annotated[
        str, typer.Option(help="auto (backbone if its weights are here), fallback or keras.")
    ] = "auto",
    duplicate_threshold: Annotated[
        int, typer.Option(help="Most differing perceptual-hash bits of a near-duplicate.")
    ] = 4,
) -> None:
    """Flag odd photos per species (DBSCAN) and find near-duplicates; human decisions stay."""
    from app import cli as main
    from app.db import session_scope
    from app.services import preflight
    from app.services.curation import CurationError, run_curation

    settings = main._settings()
    with main._startup_errors():
        preflight.check_database(settings)
        preflight.check_schema(settings)
    params = {
        "species": species or None, "min_samples": min_samples, "eps": eps,
        "pca_components": pca, "extractor": extractor, "duplicate_threshold": duplicate_threshold,
    }  # fmt: skip
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
        console=main.console,
    ) as bar:  # fmt: skip
        task = bar.add_task("curating", total=1.0)
        try:
            with session_scope(settings.db_url) as session:
                report = run_curation(
                    session, settings, params,
                    progress=lambda f, text: bar.update(task, completed=f, description=text),
                )  # fmt: skip
        except CurationError as exc:
            raise main._fail(str(exc)) from None
    main.console.print(
        f"run {report.run_id} ({report.extractor}): flagged {report.flagged} of {report.images} "
        f"photos in {report.species} species; {report.duplicate_groups} near-duplicate groups, "
        f"{report.conflicts} across species (label conflicts)"
    )
    if report.skipped_species:
        main.console.print(f"too few photos to cluster: {', '.join(report.skipped_species)}")
