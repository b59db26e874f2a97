"""`sporeprint train`: queue a train job for the gpu workers and follow it in the terminal.

The job is the same one the web form queues (the same defaults and checks, from
app/services/training_form.py), so it shows on the Jobs page with its live charts too.
Ctrl-C asks the run to stop; it keeps its last complete epoch, ready to resume.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

POLL_S = 1.0


def _params(version: int, recipe: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """Job parameters: a recipe file as given, or the form's defaults with the options set."""
    from app import cli as main
    from app.services import training_form

    if recipe is not None:
        try:
            params = json.loads(recipe.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise main._fail(f"cannot read the recipe {recipe}: {exc}") from None
        if not isinstance(params, dict):
            raise main._fail(f"the recipe {recipe} must be a JSON object of training parameters")
        if any(value is not None for value in options.values()):
            raise main._fail("give either --recipe or the separate options, not both")
        return {**params, "dataset_version_id": version}
    form = training_form.default_form(version, main._settings(), backbone=options.get("backbone"))
    form.update({k: str(v) for k, v in options.items() if v is not None})
    if options.get("augment") is False:
        form["augment"] = ""
    return training_form.params_from_form(form)


def _gpu_worker_alive(settings: Any) -> bool:
    from app.db import session_scope
    from app.services import workers
    from app.services.workers import Liveness

    with session_scope(settings.db_url) as session:
        return any(
            "gpu" in w.queues
            and workers.liveness(w, settings.heartbeat_interval, settings.worker_timeout)
            == Liveness.alive
            for w in workers.all_workers(session)
        )


def follow(settings: Any, job_id: int) -> str:
    """Show a job's progress until it finishes; returns its final status."""
    from app import cli as main
    from app.db import session_scope
    from app.models import Job, JobStatus
    from app.services import jobs

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
        console=main.console,
    ) as bar:  # fmt: skip
        task = bar.add_task(f"job {job_id}: queued", total=1.0)
        while True:
            try:
                with session_scope(settings.db_url) as session:
                    job = session.get(Job, job_id)
                    assert job is not None
                    status = JobStatus(job.status)
                    text = job.progress_text or status.value
                    bar.update(task, completed=job.progress or 0.0,
                               description=f"job {job_id}: {text}")  # fmt: skip
                if status.finished:
                    return status.value
                time.sleep(POLL_S)
            except KeyboardInterrupt:
                with session_scope(settings.db_url) as session:
                    jobs.request_cancel(session, job_id)
                main.console.print("cancel requested; the run stops within a batch or two")


def train(
    dataset_version: Annotated[int, typer.Argument(help="Id of the dataset version to train on.")],
    recipe: Annotated[
        Path | None,
        typer.Option(help="A JSON file of training parameters (see the JSON API's train job)."),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="MobileNetV3Small (default), MobileNetV3Large, ResNet50V2…")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="imagenet (default; needs the weights file) or none.")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels.")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    head_epochs: Annotated[
        int | None, typer.Option(help="Phase 1: epochs with the backbone frozen.")
    ] = None,
    head_lr: Annotated[float | None, typer.Option(help="Phase 1 learning rate.")] = None,
    fine_epochs: Annotated[
        int | None, typer.Option(help="Phase 2: epochs with the last layers unfrozen.")
    ] = None,
    fine_last: Annotated[
        int | None, typer.Option(help="Phase 2: how many backbone layers to unfreeze.")
    ] = None,
    fine_lr: Annotated[float | None, typer.Option(help="Phase 2 learning rate (lower).")] = None,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Augmentation layers on/off.")
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Queue the job and return without following it.")
    ] = False,
) -> None:
    """Train a classifier on a dataset version: a job for the gpu workers, followed here."""
    from app import cli as main
    from app.db import session_scope
    from app.services import dispatch, preflight, training_form
    from app.services.jobs import JobError

    settings = main._settings()
    with main._startup_errors():
        preflight.check_database(settings)
        preflight.check_schema(settings)
    options = {
        "backbone": backbone, "weights": weights, "image_size": image_size,
        "batch_size": batch_size, "head_epochs": head_epochs, "head_lr": head_lr,
        "fine_epochs": fine_epochs, "fine_last": fine_last, "fine_lr": fine_lr, "seed": seed,
        "augment": augment,
    }  # fmt: skip
    params = _params(dataset_version, recipe, options)
    errors = training_form.form_errors(params)
    if errors:
        lines = "\n".join(f"  {field}: {message}" for field, message in errors.items())
        raise main._fail(f"these training parameters cannot run:\n{lines}")
    from app.models import DatasetVersion

    with session_scope(settings.db_url) as session:
        if session.get(DatasetVersion, dataset_version) is None:
            raise main._fail(f"there is no dataset version {dataset_version}")
        try:
            job = dispatch.submit(session, settings, "train", params=params)
        except JobError as exc:
            raise main._fail(str(exc)) from None
        job_id = job.id
    assert job_id is not None
    main.console.print(f"job {job_id} queued for the gpu workers (see /jobs/{job_id} in the app)")
    if not _gpu_worker_alive(settings):
        main.console.print(
            "no gpu worker is running: the job waits in the queue until one starts "
            "(`sporeprint up`, or `sporeprint worker --queues gpu` on a GPU machine)"
        )
    if detach:
        return
    status = follow(settings, job_id)
    with session_scope(settings.db_url) as session:
        from app.models import Job

        job = session.get(Job, job_id)
        assert job is not None
        if status == "succeeded":
            result = job.result or {}
            model_id = result.get("trained_model_id")
            top1, top5 = result.get("top1", float("nan")), result.get("top5", float("nan"))
            main.console.print(
                f"trained model {model_id}: test top-1 {top1:.3f}, top-5 {top5:.3f} after "
                f"{result.get('epochs')} epochs (see /models/{model_id})"
            )
            return
        main.console.print(f"job {job_id} {status}: {job.error or 'stopped'}")
    raise typer.Exit(1)
