"""The confusion matrix of a trained model, laid out for inline SVG drawn on the server.

Rows are the true species, columns the predicted ones. A cell's shade is its share of the row
(the row's recall on the diagonal, a confusion off it), so a rare species' errors are as visible
as a common one's; the count is written in the cell when the cell is big enough to hold it.
Labels are the species names, shortened to fit; each cell's tooltip says it in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The grid fits this many SVG units; cells stay between these sizes (a very large matrix grows
# the picture rather than shrinking cells to nothing; the SVG scales to its container).
GRID = 480
MIN_CELL, MAX_CELL = 7.0, 44.0
LABEL_CHARS = 22
LABEL_UNIT = 6.2  # SVG units per character of a 11-unit font, roughly
COUNT_MIN_CELL = 18.0


@dataclass(frozen=True)
class Cell:
    x: float
    y: float
    count: int
    share: float  # of the true class's test photos
    diagonal: bool
    title: str
    text_x: float
    text_y: float


@dataclass(frozen=True)
class AxisLabel:
    pos: float
    text: str
    full: str


@dataclass(frozen=True)
class ConfusionPicture:
    cells: list[Cell]
    rows: list[AxisLabel]
    columns: list[AxisLabel]
    cell: float
    left: float
    top: float
    width: float
    height: float
    show_counts: bool
    font: float
    total: int
    correct: int


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def confusion_picture(confusion: Any, labels: list[str]) -> ConfusionPicture | None:
    """The picture, or None when the matrix is missing or does not match the labels."""
    n = len(labels)
    if (
        not n
        or not isinstance(confusion, list)
        or len(confusion) != n
        or any(not isinstance(row, list) or len(row) != n for row in confusion)
    ):
        return None
    matrix = [[int(v) if isinstance(v, int | float) else 0 for v in row] for row in confusion]
    cell = min(MAX_CELL, max(MIN_CELL, GRID / n))
    font = min(11.0, max(6.0, cell * 0.6))
    longest = max(len(_short(label)) for label in labels)
    margin = 12 + longest * LABEL_UNIT * font / 11
    # Column labels are turned 45°, so they need about 0.7 of their length above the grid.
    left, top = margin, 0.72 * margin + 8
    cells: list[Cell] = []
    for i, row in enumerate(matrix):
        support = sum(row)
        for j, count in enumerate(row):
            share = count / support if support else 0.0
            x, y = left + j * cell, top + i * cell
            if i == j:
                title = f"{labels[i]}: {count} of {support} right ({share:.0%})"
            else:
                title = f"{labels[i]} taken for {labels[j]}: {count} of {support} ({share:.0%})"
            cells.append(
                Cell(
                    x=round(x, 2), y=round(y, 2), count=count, share=round(share, 4),
                    diagonal=i == j, title=title, text_x=round(x + cell / 2, 2),
                    text_y=round(y + cell / 2 + font * 0.35, 2),
                )
            )  # fmt: skip
    axis = [
        AxisLabel(pos=round(k * cell + cell / 2, 2), text=_short(label), full=label)
        for k, label in enumerate(labels)
    ]
    return ConfusionPicture(
        cells=cells,
        rows=[AxisLabel(round(top + a.pos, 2), a.text, a.full) for a in axis],
        columns=[AxisLabel(round(left + a.pos, 2), a.text, a.full) for a in axis],
        cell=round(cell, 2),
        left=round(left, 2),
        top=round(top, 2),
        # The last column's label, turned 45°, reaches right of the grid by about 0.7 of its
        # length.
        width=round(left + n * cell + max(8.0, 0.72 * margin - cell / 2), 2),
        height=round(top + n * cell + 8, 2),
        show_counts=cell >= COUNT_MIN_CELL,
        font=round(font, 2),
        total=sum(map(sum, matrix)),
        correct=sum(matrix[k][k] for k in range(n)),
    )
