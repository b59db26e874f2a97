"""Where the project's non-Python resources (templates, static, migrations) live."""

from __future__ import annotations

from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def resource_dir(name: str) -> Path:
    """`name` beside the source tree (a checkout), else in the working directory (an image)."""
    for root in (_SOURCE_ROOT, Path.cwd()):
        candidate = root / name
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the '{name}' folder; run Sporeprint from its project directory"
    )
