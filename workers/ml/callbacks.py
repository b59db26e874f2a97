"""Keras callbacks for training jobs; they know nothing of the database.

This module needs Keras at import: only the training run imports it.

`MetricsCallback` hands metric rows (dicts shaped like `JobMetric`) to a writer function every
`every_steps` training steps and at every epoch end, and asks a cancel check after each batch
(throttled to `cancel_interval_s`): on a cancel it sets `model.stop_training` and raises
`StopRequested`, so training stops within a batch and the epoch is not recorded as complete.

`EpochCheckpoint` saves, after every complete epoch, the model as `last.keras` and a
`progress.json` (phase, epoch, learning rate, best value so far) in the checkpoint folder, and
the best model so far (by `monitor`) as `best.keras`; files are written beside and renamed, so
a worker killed mid-save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

MetricRow = dict[str, Any]


class StopRequested(Exception):
    """Raised out of `fit` when the cancel check said yes."""


def current_lr(model: Any) -> float:
    lr = model.optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def _clean(logs: dict[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (logs or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = round(number, 6)
    return out


class MetricsCallback(keras.callbacks.Callback):
    def __init__(
        self,
        write: Callable[[list[MetricRow]], None],
        *,
        phase: int,
        steps_per_epoch: int,
        batch_size: int,
        total_epochs: int,
        every_steps: int = 10,
        cancelled: Callable[[], bool] | None = None,
        cancel_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        first_step: int = 0,
    ) -> None:
        super().__init__()
        self.write = write
        self.phase = phase
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.batch_size = batch_size
        self.total_epochs = total_epochs
        self.every_steps = max(every_steps, 1)
        self.cancelled = cancelled
        self.cancel_interval_s = cancel_interval_s
        self.clock = clock
        self.epoch = 0
        # Training steps before this fit call (earlier phases, a resumed run), so that step
        # numbers run on across phases and the charts' step axis never goes back.
        self.step = first_step
        self._fit_steps = 0
        self.stopped = False
        self._last_check = -math.inf
        self._epoch_start = clock()
        self._window_start = clock()
        self._window_steps = 0
        self._fit_start = clock()
        self._epochs_done = 0
        self._first_epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._fit_start = self.clock()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._epochs_done == 0:
            self._first_epoch = epoch
        self.epoch = epoch
        self._epoch_start = self._window_start = self.clock()
        self._window_steps = 0

    def _eta(self, batch_in_epoch: int) -> float | None:
        elapsed = self.clock() - self._fit_start
        done = (self.epoch - self._first_epoch) + batch_in_epoch / self.steps_per_epoch
        if done <= 0:
            return None
        left = (self.total_epochs - self._first_epoch) - done
        return round(max(left, 0) * elapsed / done, 1)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        self._fit_steps += 1
        self._window_steps += 1
        if self._fit_steps % self.every_steps == 0:
            now = self.clock()
            rate = self._window_steps * self.batch_size / max(now - self._window_start, 1e-9)
            values = {**_clean(logs), "learning_rate": current_lr(self.model)}
            values["images_per_s"] = round(rate, 2)
            values["eta_s"] = self._eta(batch + 1)
            self.write(
                [{"phase": self.phase, "epoch": self.epoch + 1, "step": self.step, **values}]
            )
            self._window_start, self._window_steps = now, 0
        if self.cancelled is not None:
            now = self.clock()
            if now - self._last_check >= self.cancel_interval_s:
                self._last_check = now
                if self.cancelled():
                    self.stopped = True
                    self.model.stop_training = True
                    raise StopRequested

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epochs_done += 1
        seconds = self.clock() - self._epoch_start
        values = {**_clean(logs), "learning_rate": current_lr(self.model)}
        values["epoch_seconds"] = round(seconds, 3)
        values["images_per_s"] = round(self.steps_per_epoch * self.batch_size / seconds, 2)
        values["eta_s"] = self._eta(self.steps_per_epoch)
        self.write(
            [{"phase": self.phase, "epoch": epoch + 1, "step": self.step, "end": True, **values}]
        )


class EpochProgress(keras.callbacks.Callback):
    """Job progress after every epoch (95 % for training; evaluation takes the rest)."""

    def __init__(self, progress: Callable[[float, str], None], total_epochs: int) -> None:
        super().__init__()
        self.progress = progress
        self.total = max(total_epochs, 1)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.progress(0.95 * (epoch + 1) / self.total, f"epoch {epoch + 1}/{self.total}")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def save_model_atomic(model: Any, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")  # Keras insists on the .keras suffix
    model.save(tmp)
    os.replace(tmp, path)


class EpochCheckpoint(keras.callbacks.Callback):
    def __init__(
        self,
        folder: Path,
        *,
        phase: int,
        phase_first_epoch: int,
        monitor: str,
        best: float | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.phase = phase
        self.phase_first_epoch = phase_first_epoch
        self.monitor = monitor
        self.mode_max = "acc" in monitor
        self.best = best
        self.extra = extra or {}

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode_max else value < self.best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        value = logs.get(self.monitor)
        improved = value is not None and math.isfinite(float(value)) and self._better(float(value))
        if improved:
            self.best = float(value)  # type: ignore[arg-type]
            save_model_atomic(self.model, self.folder / "best.keras")
        save_model_atomic(self.model, self.folder / "last.keras")
        write_json_atomic(
            self.folder / "progress.json",
            {
                **self.extra,
                "phase": self.phase,
                "epochs_done": epoch + 1,  # global, across phases
                "phase_epochs_done": epoch + 1 - self.phase_first_epoch,
                "learning_rate": current_lr(self.model),
                "monitor": self.monitor,
                "best": self.best,
            },
        )
