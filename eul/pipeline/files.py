"""Files the steps write: atomic JSON, finished folders moved into place, hashes, and the
names of a request's layer. What leaves the data files is ids, counts, hashes, metrics and
weights: never record text."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from eul.runtime.jsonsafe import clean_json


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean_json(value), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def numeric_metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric, non-NaN entries, for MLflow."""
    return {
        f"{prefix}{k}": float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
    }


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place (a half-written one never has the final name)."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def layer_key(request_id: str) -> str:
    """A request's layer name and folder name: its id percent-encoded, dots included
    (torch module names may not hold '.', and ids may hold '/')."""
    return quote(request_id, safe="").replace(".", "%2E")
