"""eul's own temporary folders, named by kind so that the purge's leak scan reads exactly them.

Reads, staged uploads and downloads pass through the system temporary folder; a kill leaves
them behind, and a purge must find any that still hold a purged row. The scan reads the
folders named here and nothing else in the temporary folder: a benchmark's or another
project's folder that happens to start with `eul-` is not this project's copy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

SCRATCH_PREFIX = "eul-"
# read: the private datasets cache an older version gave each read of a file (the readers now
# keep records in memory only); run, stage, tag: MLflow uploads and downloads;
# model: a registered version being loaded; scan: the leak scan's own downloads.
SCRATCH_KINDS = ("read", "run", "stage", "tag", "model", "scan")


def scratch_prefix(kind: str) -> str:
    if kind not in SCRATCH_KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}; expected one of {SCRATCH_KINDS}")
    return f"{SCRATCH_PREFIX}{kind}-"


def scratch_folder(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder of one kind, removed when its `with` block ends."""
    return tempfile.TemporaryDirectory(prefix=scratch_prefix(kind))


def scratch_pattern() -> str:
    """The names the scan reads, as shown in its report."""
    return f"{SCRATCH_PREFIX}{{{','.join(SCRATCH_KINDS)}}}-*"


def scratch_entries(temp_root: Path) -> list[Path]:
    """eul's temporary folders left in `temp_root` (none when it does not exist)."""
    if not temp_root.is_dir():
        return []
    prefixes = tuple(scratch_prefix(kind) for kind in SCRATCH_KINDS)
    return sorted(p for p in temp_root.iterdir() if p.name.startswith(prefixes))
