"""GPU telemetry: devices and the processes holding their memory.

Providers, in order: NVML (nvidia-ml-py), then the `nvidia-smi` command, then none. Each worker
publishes a snapshot with its heartbeat, so the web server never needs to run beside a GPU.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

NO_GPU = "no NVIDIA GPU on this worker"
SMI_TIMEOUT_S = 10
GPU_FIELDS = "index,uuid,name,memory.used,memory.total,utilization.gpu,temperature.gpu,power.draw"
APP_FIELDS = "pid,gpu_uuid,process_name,used_memory"


@dataclass
class GpuDevice:
    index: int
    uuid: str
    name: str
    memory_used_mb: float | None
    memory_total_mb: float | None
    utilization: float | None  # percent
    temperature_c: float | None
    power_w: float | None


@dataclass
class GpuProcess:
    pid: int
    gpu_uuid: str
    gpu_index: int | None
    name: str
    cmdline: str
    memory_mb: float | None


@dataclass
class GpuSnapshot:
    provider: str  # "nvml", "nvidia-smi" or "none"
    devices: list[GpuDevice] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: str) -> float | None:
    """nvidia-smi writes `[N/A]`, `[Not Supported]` or blanks where it has no reading."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        return None


def _rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if row]


def parse_gpus(text: str) -> list[GpuDevice]:
    """`nvidia-smi --query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits` output."""
    devices = []
    for row in _rows(text):
        if len(row) != len(GPU_FIELDS.split(",")):
            raise ValueError(f"unexpected nvidia-smi GPU line: {','.join(row)!r}")
        index, uuid, name, used, total, util, temp, power = row
        devices.append(
            GpuDevice(
                index=int(index), uuid=uuid, name=name, memory_used_mb=_number(used),
                memory_total_mb=_number(total), utilization=_number(util),
                temperature_c=_number(temp), power_w=_number(power),
            )
        )  # fmt: skip
    return devices


def parse_apps(text: str, devices: list[GpuDevice]) -> list[GpuProcess]:
    """`nvidia-smi --query-compute-apps=<APP_FIELDS> --format=csv,noheader,nounits` output."""
    by_uuid = {d.uuid: d.index for d in devices}
    processes = []
    for row in _rows(text):
        if len(row) != len(APP_FIELDS.split(",")):
            raise ValueError(f"unexpected nvidia-smi process line: {','.join(row)!r}")
        pid, uuid, name, memory = row
        processes.append(
            GpuProcess(
                pid=int(pid), gpu_uuid=uuid, gpu_index=by_uuid.get(uuid), name=name,
                cmdline=_cmdline(int(pid)), memory_mb=_number(memory),
            )
        )  # fmt: skip
    return processes


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return ""  # gone, or another user's process


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return ""


def from_nvidia_smi(executable: str) -> GpuSnapshot:
    def query(*args: str) -> str:
        return subprocess.run(
            [executable, *args, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=True, timeout=SMI_TIMEOUT_S,
        ).stdout  # fmt: skip

    devices = parse_gpus(query(f"--query-gpu={GPU_FIELDS}"))
    processes = parse_apps(query(f"--query-compute-apps={APP_FIELDS}"), devices)
    return GpuSnapshot(provider="nvidia-smi", devices=devices, processes=processes)


def from_nvml() -> GpuSnapshot:
    import pynvml

    pynvml.nvmlInit()
    try:
        devices, processes = [], []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                GpuDevice(
                    index=index, uuid=uuid, name=pynvml.nvmlDeviceGetName(handle),
                    memory_used_mb=memory.used / 2**20, memory_total_mb=memory.total / 2**20,
                    utilization=_nvml(lambda h=handle: pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                    temperature_c=_nvml(lambda h=handle: pynvml.nvmlDeviceGetTemperature(
                        h, pynvml.NVML_TEMPERATURE_GPU)),
                    power_w=_nvml(lambda h=handle: pynvml.nvmlDeviceGetPowerUsage(h) / 1000),
                )
            )  # fmt: skip
            for app in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used = getattr(app, "usedGpuMemory", None)
                processes.append(
                    GpuProcess(
                        pid=app.pid, gpu_uuid=uuid, gpu_index=index,
                        name=_process_name(app.pid), cmdline=_cmdline(app.pid),
                        memory_mb=used / 2**20 if used else None,
                    )
                )  # fmt: skip
        return GpuSnapshot(provider="nvml", devices=devices, processes=processes)
    finally:
        pynvml.nvmlShutdown()


def _nvml(read: Any) -> float | None:
    """One reading that some GPUs do not support; missing rather than fatal."""
    import pynvml

    try:
        return float(read())
    except pynvml.NVMLError:
        return None


def snapshot(provider: str = "auto") -> GpuSnapshot:
    """Read the GPUs with the first provider that works (or the one named)."""
    if provider in ("auto", "nvml"):
        try:
            return from_nvml()
        except Exception as exc:  # no driver, no library, or no permission
            if provider == "nvml":
                return GpuSnapshot(provider="none", note=f"NVML unavailable: {exc}")
    if provider in ("auto", "nvidia-smi"):
        executable = shutil.which("nvidia-smi")
        if executable:
            try:
                return from_nvidia_smi(executable)
            except (subprocess.SubprocessError, OSError, ValueError) as exc:
                return GpuSnapshot(provider="none", note=f"nvidia-smi failed: {exc}")
    return GpuSnapshot(provider="none", note=NO_GPU)
