"""A fake `nvidia-smi` for tests: one GPU, and the processes a test says hold memory on it.

The fake is a real executable put first on PATH; it answers the two queries Sporeprint makes
from a JSON state file, listing a process only while it is really alive, like the real tool.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

SCRIPT = """#!{python}
import json, os, sys
import psutil
state = json.load(open(os.environ["FAKE_NVIDIA_SMI_STATE"]))
args = " ".join(sys.argv[1:])
if "--query-gpu=" in args:
    for g in state["gpus"]:
        print(", ".join(str(v) for v in g))
elif "--query-compute-apps=" in args:
    for pid, uuid, name, mem in state["processes"]:
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            print(f"{{pid}}, {{uuid}}, {{name}}, {{mem}}")
else:
    sys.exit("fake nvidia-smi: unexpected arguments: " + args)
"""

GPU_UUID = "GPU-3f5a9c1e-0000-4000-8000-000000000001"
GPU_ROW = [0, GPU_UUID, "NVIDIA H100 80GB HBM3", 4321, 81559, 37, 54, "[N/A]"]


class FakeGpu:
    def __init__(self, root: Path) -> None:
        self.bin = root / "fake-bin"
        self.bin.mkdir()
        self.state = root / "fake-nvidia-smi.json"
        executable = self.bin / "nvidia-smi"
        executable.write_text(SCRIPT.format(python=sys.executable))
        executable.chmod(executable.stat().st_mode | stat.S_IEXEC)
        self.processes: list[list[object]] = []
        self._write()

    def hold(self, pid: int, name: str = "python3", memory_mb: int = 2048) -> None:
        """Report `pid` as holding `memory_mb` of GPU memory."""
        self.processes.append([pid, GPU_UUID, name, memory_mb])
        self._write()

    def _write(self) -> None:
        self.state.write_text(json.dumps({"gpus": [GPU_ROW], "processes": self.processes}))

    def environ(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_NVIDIA_SMI_STATE": str(self.state),
        }
