"""One result envelope for every benchmark, so that any two results can be compared.

Each result is written as JSON `{"benchmark", "commit", "machine", "settings", "figures"}`
with its table as Markdown beside it (`.md`). `figures` holds what the benchmark measured,
exactly as it reports it; the rest says what ran, from which commit, on which machine.
Used by `eul bench` and by the store and pipeline benchmarks in `benchmarks/`.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path

from eul.runtime.jsonsafe import clean_json
from eul.runtime.source import git_commit

KEYS = ("benchmark", "commit", "machine", "settings", "figures")


def machine(device: str = "cpu") -> dict[str, object]:
    """Where the benchmark ran: cores, torch's threads, platform, versions and the device."""
    import torch

    return {
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }


def envelope(
    benchmark: str,
    figures: Mapping[str, object],
    settings: Mapping[str, object] | None = None,
    device: str = "cpu",
) -> dict[str, object]:
    """The result as JSON-ready data: `figures` unchanged (NaN as null) inside the envelope."""
    return {
        "benchmark": benchmark,
        "commit": git_commit(),
        "machine": machine(device),
        "settings": clean_json(dict(settings or {})),
        "figures": clean_json(dict(figures)),
    }


def write_result(
    path: str | Path,
    benchmark: str,
    figures: Mapping[str, object],
    table: str,
    settings: Mapping[str, object] | None = None,
    device: str = "cpu",
) -> list[Path]:
    """The enveloped result as JSON at `path` and `table` as Markdown beside it; returns
    both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = envelope(benchmark, figures, settings, device)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")
    table_path = path.with_suffix(".md")
    table_path.write_text(table + "\n")
    return [path, table_path]


def run_record(benchmark: str, settings: Mapping[str, object], device: str) -> dict[str, object]:
    """What ran, kept beside a report in memory until its result is written: the benchmark's
    name, its settings and the device it ran on."""
    return {"benchmark": benchmark, "settings": dict(settings), "device": str(device)}
