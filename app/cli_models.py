"""`sporeprint export` and `sporeprint predict`: TFLite files of a trained model, and using them.

`export` runs the export (app/services/exports.py) right here with a progress bar, the same
run as the `export` job on the gpu queue. `predict` runs one photo through an export: an export
id (the database names the file and its labels), a `.tflite` file (labels from `--labels` or a
`labels.txt` beside it) or a bundle zip, which needs nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

KIND_HELP = "float32, float16, dynamic or int8 (repeat; default: all four)."


def export(
    model_id: Annotated[int, typer.Argument(help="The trained model (its id on the Models page).")],
    kind: Annotated[list[str] | None, typer.Option("--kind", help=KIND_HELP)] = None,
    int8_io: Annotated[
        str, typer.Option(help="The int8 model's input and output: uint8 or float32.")
    ] = "uint8",
    representative_images: Annotated[
        int, typer.Option(help="Training photos that calibrate int8.", min=1)
    ] = 100,
    evaluate_images: Annotated[
        int | None, typer.Option(help="Measure on at most this many test photos (default all).")
    ] = None,
    latency_images: Annotated[
        int, typer.Option(help="Test photos timed one at a time per file.", min=1)
    ] = 50,
) -> None:
    """Export a trained model to TFLite and measure each file against the Keras model."""
    from pydantic import ValidationError

    from app import cli as main
    from app.db import session_scope
    from app.services import preflight
    from app.services.exports import ExportError, ExportParams, run_export

    settings = main._settings()
    with main._startup_errors():
        preflight.check_database(settings)
        preflight.check_schema(settings)
    raw = {
        "trained_model_id": model_id, "int8_io": int8_io,
        "representative_images": representative_images, "evaluate_images": evaluate_images,
        "latency_images": latency_images,
    }  # fmt: skip
    if kind:
        raw["kinds"] = kind
    try:
        params = ExportParams.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise main._fail(problems) from None
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
        console=main.console,
    ) as bar:  # fmt: skip
        task = bar.add_task("exporting", total=1.0)
        try:
            with session_scope(settings.db_url) as session:
                rows = run_export(
                    session, settings, params, job_id=None,
                    progress=lambda f, text: bar.update(task, completed=f, description=text),
                    log=lambda message: bar.console.print(message, highlight=False),
                )  # fmt: skip
                figures = [
                    (r.id, r.quantization, r.input_dtype, r.size_bytes or 0, r.top1_agreement,
                     r.accuracy, r.top5_accuracy, r.latency_ms, r.latency_p95_ms, r.bundle_path)
                    for r in rows
                ]  # fmt: skip
                keras = rows[0].details.get("keras", {}) if rows else {}
        except ExportError as exc:
            raise main._fail(str(exc)) from None
    table = Table(title=f"exports of trained model {model_id}")
    for column in ("id", "kind", "input", "MB", "agree", "top-1", "top-5", "ms", "p95 ms"):
        table.add_column(column, justify="right" if column not in ("kind", "input") else "left")
    for row_id, q, dtype, size, agree, top1, top5, mean, p95, _ in figures:
        table.add_row(
            str(row_id), q, dtype, f"{size / 1e6:.2f}", f"{agree:.3f}", f"{top1:.3f}",
            f"{top5:.3f}", f"{mean:.2f}", f"{p95:.2f}",
        )  # fmt: skip
    if keras:
        table.add_row(
            "", "keras", "float32", f"{(keras.get('size_bytes') or 0) / 1e6:.2f}", "1.000",
            f"{keras['accuracy']:.3f}", f"{keras['top5_accuracy']:.3f}",
            f"{keras['latency_ms']:.2f}", f"{keras['latency_p95_ms']:.2f}",
        )  # fmt: skip
    main.console.print(table)
    for _, q, *_, bundle in figures:
        main.console.print(f"{q}: {settings.data_dir / bundle}", highlight=False)


def predict(
    export_ref: Annotated[
        str,
        typer.Argument(metavar="EXPORT", help="An export id, a .tflite file or a bundle .zip."),
    ],
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="A photo (JPEG, PNG, WebP …).")],
    top: Annotated[int, typer.Option(help="How many species to list.", min=1)] = 5,
    labels: Annotated[
        Path | None, typer.Option(help="labels.txt for a bare .tflite file (one per line).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The most likely species for one photo, from an exported TFLite model."""
    from app import cli as main
    from app.services.predict import PredictError, open_export, read_labels

    try:
        if export_ref.isdigit() and not Path(export_ref).exists():
            from app.db import session_scope
            from app.services import preflight
            from app.services.exports import ExportError, classifier_for

            settings = main._settings()
            with main._startup_errors():
                preflight.check_database(settings)
                preflight.check_schema(settings)
            try:
                with session_scope(settings.db_url) as session:
                    classifier = classifier_for(session, settings, int(export_ref))
            except ExportError as exc:
                raise main._fail(str(exc)) from None
        else:
            path = Path(export_ref)
            if not path.is_file():
                raise main._fail(f"no such export file: {export_ref}")
            names = read_labels(labels) if labels is not None else None
            classifier = open_export(path, names)
        guesses = classifier.predict_image(image, top)
    except PredictError as exc:
        raise main._fail(str(exc)) from None
    except OSError as exc:
        raise main._fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"image": str(image), "top": [[n, p] for n, p in guesses]}))
        return
    width = max(len(name) for name, _ in guesses)
    for name, score in guesses:
        typer.echo(f"{score:7.2%}  {name:<{width}}")
    typer.echo(
        "This model is no advice on eating wild mushrooms; never eat one on its word.", err=True
    )
