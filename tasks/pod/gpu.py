"""GPU telemetry for heartbeats: NVML when importable, else nvidia-smi, else nothing.

A CPU-only pod has no GPU; that is not an error, the heartbeat simply carries no GPU fields.
`mem_gb` is decimal gigabytes (1e9 bytes) from either source: NVML counts bytes, nvidia-smi MiB.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

MIB = 1024 * 1024


def _nvml() -> dict[str, float] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 1e9
        temp = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        return {"gpu_util": float(util), "mem_gb": round(mem, 3), "temp_c": float(temp)}
    except Exception:  # noqa: BLE001 - telemetry must never fail a run
        return None


def _nvidia_smi() -> dict[str, float] | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        out = subprocess.run(
            [binary, "--query-gpu=utilization.gpu,memory.used,temperature.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.splitlines()[0]
        util, mem_mib, temp = (float(x) for x in out.split(","))
        return {"gpu_util": util, "mem_gb": round(mem_mib * MIB / 1e9, 3), "temp_c": temp}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def gpu_stats() -> dict[str, Any]:
    """{"gpu_util", "mem_gb", "temp_c"} of the first GPU, or {} when none is visible."""
    return _nvml() or _nvidia_smi() or {}


def gpu_name() -> str | None:
    """The first GPU's model name for `ai.run.started`, or None on a CPU pod."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.splitlines()[0].strip() or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
