"""GPU telemetry: nvidia-smi when present, nothing (not an error) on a CPU pod."""

import os
import stat

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
    assert gpu.gpu_stats() == {"gpu_util": 87.0, "mem_gb": 40.0, "temp_c": 71.0}
    assert gpu.gpu_name() == "NVIDIA A100-SXM4-80GB"
