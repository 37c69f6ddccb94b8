"""Files the steps write: atomic JSON, finished folders moved into place, hashes, a finished
folder's done.json with the sha256 of each file it holds (checked before the folder is used),
and the names of a request's layer. What leaves the data files is ids, counts, hashes,
metrics and weights: never record text."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from eul.pipeline.context import DONE_FILE, PipelineError
from eul.runtime.jsonsafe import clean_json

# The key of done.json that holds {file name: sha256} of every other file of its folder.
CHECKSUMS = "sha256"


class CorruptFileError(PipelineError):
    """A finished folder's file does not match the sha256 its done.json recorded (a bad disk,
    a partial copy, an edit): it is refused, never loaded into a model."""


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


def folder_checksums(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file in `folder` but its done.json."""
    return {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != DONE_FILE
    }


def write_done(folder: Path, value: dict[str, Any]) -> None:
    """`folder`'s done.json: `value` and the sha256 of each of the folder's files, written
    last, so that a folder with a done.json is finished and can be checked."""
    write_json(folder / DONE_FILE, {**value, CHECKSUMS: folder_checksums(folder)})


def read_done(folder: Path) -> dict[str, Any]:
    """`folder`'s done.json without its checksums, once every file it lists matches; raises
    `CorruptFileError` naming the file otherwise. (A done.json written before checksums were
    recorded lists none: its folder is taken as it is.)"""
    try:
        value = json.loads((folder / DONE_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CorruptFileError(
            f"{folder / DONE_FILE} cannot be read ({type(err).__name__}); delete {folder} "
            "and run the batch again to rebuild it"
        ) from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{folder / DONE_FILE} is not a JSON object; delete {folder}")
    expected = value.pop(CHECKSUMS, None) or {}
    for name, digest in sorted(expected.items()):
        path = folder / name
        if not path.is_file() or file_sha256(path) != digest:
            what = "is missing" if not path.is_file() else "does not match its sha256"
            raise CorruptFileError(
                f"{path} {what} in {DONE_FILE} (corrupted or edited): refused, nothing of it "
                f"is loaded; delete {folder} and run the batch again to rebuild it"
            )
    return value
