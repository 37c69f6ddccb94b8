"""scripts/gpu_smoke.py: importable, skipped without CUDA, and its checks pass on the CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.py"


@pytest.fixture(scope="module")
def smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_the_script_says_it_was_skipped_and_exits_0() -> None:
    # given a machine (or an environment) where torch sees no GPU
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    # when the script is run as a script
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300
    )
    # then it skips, says so, and succeeds
    assert done.returncode == 0, done.stderr
    assert "gpu smoke test skipped" in done.stdout


def test_every_check_passes_with_every_step_on_the_cpu(smoke: ModuleType) -> None:
    # when the smoke test's steps run on the CPU
    lines: list[str] = []
    report = smoke.run_smoke(torch.device("cpu"), out=lines.append)
    # then nothing failed, every step was timed and the devices were printed
    assert report.failures == []
    assert {"train (base model)", "EUL update", "fuse", "evaluate"} <= set(report.seconds)
    assert any(line.startswith("ok   teacher cache:") and "on cpu" in line for line in lines)
    assert any(line.startswith("ok   fusion statistics (float64 sums):") for line in lines)


def test_a_tensor_on_the_wrong_device_is_a_failure(smoke: ModuleType) -> None:
    # given tensors on the CPU and one elsewhere (meta: a device without data)
    lines: list[str] = []
    report = smoke.Report(out=lines.append)
    tensors = [torch.zeros(2), torch.zeros(2, device="meta")]
    # when they are checked against the CPU, then the check fails and names both devices
    report.devices("mixed", tensors, torch.device("cpu"))
    report.devices("none", [], torch.device("cpu"))
    assert len(report.failures) == 2
    assert lines[0] == "FAIL mixed: 1 on cpu, 1 on meta (expected cpu)"
    assert lines[1].startswith("FAIL none: no tensors")
