"""The DBSCAN picture of one species, laid out for inline SVG drawn on the server.

The data comes from the latest `CurationRun` whose `stats` cover the species, in the shape the
curation engine writes (`app/services/curation.py`):

    stats["species"][str(species_id)] = {
        "eps": float, "min_samples": int,
        "k_distance": [float, ...],                     # sorted k-th neighbour distances
        "k_distance_ranks": [int, ...],                 # optional: each value's rank (thinned)
        "projection": [[image_id, x, y, flagged, ...], ...],  # 2-D PCA of the embeddings
        "status": "clustered" | "skipped", "reason": str,      # optional
    }

Anything missing or malformed gives `None` (the page then shows an empty state), never an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.models import CurationRun

RUNS_TO_SEARCH = 50
MAX_CURVE_POINTS = 400
# Plot boxes in SVG user units; the SVG scales to its container.
WIDTH, HEIGHT = 480, 300
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 46, 14, 14, 34


@dataclass(frozen=True)
class Point:
    image_id: int
    x: float
    y: float
    flagged: bool


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class DbscanPicture:
    run_id: int
    run_at: datetime
    extractor: str
    eps: float | None
    min_samples: int | None
    points: list[Point]
    flagged: int
    curve: str  # SVG polyline points; "" when the run kept no k-distance curve
    curve_count: int
    eps_y: float | None  # where the eps line crosses the curve's box
    curve_ticks: list[Tick]
    skipped: str | None = None  # why the run left this species out
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PAD_LEFT
    right: int = WIDTH - PAD_RIGHT
    top: int = PAD_TOP
    bottom: int = HEIGHT - PAD_BOTTOM


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _scale(value: float, low: float, high: float, out_low: float, out_high: float) -> float:
    if high - low < 1e-12:
        return (out_low + out_high) / 2
    return out_low + (value - low) / (high - low) * (out_high - out_low)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def species_stats(session: Session, species_id: int) -> tuple[CurationRun, dict] | None:
    """The latest run that has stats for this species, and those stats."""
    runs = session.exec(
        select(CurationRun).order_by(col(CurationRun.id).desc()).limit(RUNS_TO_SEARCH)
    ).all()
    for run in runs:
        per_species = (run.stats or {}).get("species")
        entry = per_species.get(str(species_id)) if isinstance(per_species, dict) else None
        if isinstance(entry, dict):
            return run, entry
    return None


def picture(session: Session, species_id: int) -> DbscanPicture | None:
    found = species_stats(session, species_id)
    if found is None:
        return None
    run, entry = found
    assert run.id is not None

    raw_points: list[tuple[int, float, float, bool]] = []
    for row in entry.get("projection") or []:
        if not isinstance(row, list | tuple) or len(row) < 3:
            continue
        x, y = _number(row[1]), _number(row[2])
        if not isinstance(row[0], int) or x is None or y is None:
            continue
        raw_points.append((row[0], x, y, bool(row[3]) if len(row) > 3 else False))
    left, right = PAD_LEFT, WIDTH - PAD_RIGHT
    top, bottom = PAD_TOP, HEIGHT - PAD_BOTTOM
    points: list[Point] = []
    if raw_points:
        xs, ys = [p[1] for p in raw_points], [p[2] for p in raw_points]
        # Equal scales on both axes so distances on screen mean what DBSCAN meant.
        span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-12)
        cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
        half_w, half_h = (right - left - 16) / 2, (bottom - top - 16) / 2
        unit = min(half_w, half_h) * 2 / span
        mid_x, mid_y = (left + right) / 2, (top + bottom) / 2
        points = [
            Point(i, round(mid_x + (x - cx) * unit, 1), round(mid_y - (y - cy) * unit, 1), f)
            for i, x, y, f in raw_points
        ]
        points.sort(key=lambda p: p.flagged)  # flagged drawn last, on top

    raw_curve = [_number(v) for v in entry.get("k_distance") or []]
    ranks = entry.get("k_distance_ranks")
    if not (
        isinstance(ranks, list)
        and len(ranks) == len(raw_curve)
        and all(isinstance(r, int) and not isinstance(r, bool) for r in ranks)
    ):
        ranks = list(range(len(raw_curve)))
    curve_points = sorted((r, d) for r, d in zip(ranks, raw_curve, strict=True) if d is not None)
    distances = [d for _, d in curve_points]
    eps = _number(entry.get("eps"))
    curve, eps_y, ticks = "", None, []
    if distances:
        step = max(1, math.ceil(len(curve_points) / MAX_CURVE_POINTS))
        sampled = curve_points[::step]
        if sampled[-1] != curve_points[-1]:
            sampled.append(curve_points[-1])
        low = 0.0
        high = max(max(distances), eps or 0.0) * 1.05 or 1.0
        last = max(curve_points[-1][0], 1)
        curve = " ".join(
            f"{_scale(i, 0, last, left, right):.1f},{_scale(d, low, high, bottom, top):.1f}"
            for i, d in sampled
        )
        if eps is not None:
            eps_y = round(_scale(eps, low, high, bottom, top), 1)
        ticks = [Tick(round(_scale(v, low, high, bottom, top), 1), _fmt(v)) for v in (low, high)]
    min_samples = entry.get("min_samples")
    skipped = None
    if entry.get("status") == "skipped":
        skipped = str(entry.get("reason") or "the run left this species out")
    images = entry.get("images")
    return DbscanPicture(
        skipped=skipped,
        run_id=run.id,
        run_at=run.created_at,
        extractor=run.extractor,
        eps=eps,
        min_samples=min_samples if isinstance(min_samples, int) else None,
        points=points,
        flagged=sum(p.flagged for p in points),
        curve=curve,
        curve_count=images if isinstance(images, int) and images > 0 else len(distances),
        eps_y=eps_y,
        curve_ticks=ticks,
    )
