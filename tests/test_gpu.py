"""GPU telemetry: NVML, else nvidia-smi when present, nothing (not an error) on a CPU pod. Both
sources give memory in the same unit (decimal GB), which the worker's metric turns into bytes."""

import os
import stat
import sys
import types

from tasks.pod import gpu


def test_a_cpu_pod_reports_no_gpu_fields(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu.gpu_stats() == {} and gpu.gpu_name() is None


def test_nvidia_smi_output_becomes_heartbeat_fields(monkeypatch, tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\ncase "$1" in --query-gpu=name) echo "NVIDIA A100-SXM4-80GB";; '
                    '*) echo "87, 40960, 71";; esac\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/bin{os.pathsep}/usr/bin")
    assert gpu.gpu_stats() == {"gpu_util": 87.0, "mem_gb": 42.95, "temp_c": 71.0}  # 40960 MiB
    assert gpu.gpu_name() == "NVIDIA A100-SXM4-80GB"


def test_nvml_reports_the_same_fields_in_the_same_units(monkeypatch):
    fake = types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda index: ("gpu", index),
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(used=40960 * gpu.MIB),
        nvmlDeviceGetTemperature=lambda handle, sensor: 71,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu.gpu_stats() == {"gpu_util": 87.0, "mem_gb": 42.95, "temp_c": 71.0}


def test_a_failing_nvml_falls_back_to_nothing_on_a_cpu_pod(monkeypatch, tmp_path):
    def broken() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=broken))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu.gpu_stats() == {}
