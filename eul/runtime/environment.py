"""Environment variables set for a block and put back after it.

Some tools read their settings only from the environment (dvc, MLflow's S3 endpoint and
retries), so a step that needs other values sets them for its own block and restores them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def restore(saved: Mapping[str, str | None]) -> None:
    """Put variables back as `saved` holds them (None: the variable was not set)."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set for the block, then every one put back as it was."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        restore(saved)


def tool_variables(pythonpath: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """What `dvc`, `eul` and Prefect subprocesses need: this Python's environment first on
    PATH, no analytics or telemetry, no downloads; `pythonpath` (a checkout) put first on
    PYTHONPATH so that its `eul` is the one imported."""
    bin_dir = str(Path(sys.executable).parent)
    values = {
        "PATH": os.pathsep.join((bin_dir, os.environ.get("PATH", ""))),
        "DVC_NO_ANALYTICS": "1",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if pythonpath is not None:
        parts = (str(pythonpath), os.environ.get("PYTHONPATH"))
        values["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return values
