"""Purge: once a request is deployed, its rows leave the data, the DVC cache and every remote.

Unlearning layers make the deployed model forget; the data itself must go too. `purge`
removes the requests' rows from the raw data, records a new data.dvc version, reruns the
stages whose outputs copy raw rows, then deletes every object the workspace no longer uses
from the cache and from each remote (`dvc gc --workspace`, never `--all-commits`: git
history still names the old data.dvc). It then checks its own work: the old objects must be
gone everywhere, and (with `scan`) no stored object may still contain a purged row. With
`scan` it also deletes the copies an older eul left in the datasets library's cache (it read
files through that cache; reads now use a temporary one removed after each read).

The evidence it returns and appends to the purge ledger holds ids and hashes only: the
subject and each removed row only as keyed digests (`subject_hmac`, `row_hmac`) under the
project's evidence key (eul.runtime.evidence), which prove a removal to whoever holds the key
and confirm no guess to anyone else.
The ledger's record ids also let `eul data init` regenerate the embedded data set on a
fresh clone without the purged rows.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from eul.params import Params, load_params
from eul.runtime.evidence import evidence_key, keyed_row, keyed_subject
from eul.stores.dvc import dvcstore
from eul.stores.dvc.partition import DataRows, Snapshot, match_requests, read_rows

# A field value shorter than this may well occur in rows that are kept, so it is not
# searched for on its own (the whole stored row always is).
MIN_SCAN_CHARS = 24


class PurgeError(RuntimeError):
    """The purge could not finish or its check failed; the message says where."""


@dataclass(frozen=True)
class PurgeRequest:
    """A deployed request: its subject's rows and/or the listed record ids go."""

    request_id: str
    record_ids: tuple[str, ...] = ()
    subject_id: str | None = None


def requests_from_snapshot(snapshot: Snapshot, status: str = "deployed") -> list[PurgeRequest]:
    """The snapshot's requests with `status` (deployed: the model no longer needs the rows)."""
    return [
        PurgeRequest(r.request_id, r.record_ids, r.subject_id) for r in snapshot.with_status(status)
    ]


def purged_record_ids(ledger: str | Path) -> set[str]:
    """Every record id the purge ledger says was removed."""
    ledger = Path(ledger)
    if not ledger.is_file():
        return set()
    ids: set[str] = set()
    for line in ledger.read_text(encoding="utf-8").splitlines():
        if line.strip():
            for request in json.loads(line)["requests"]:
                ids.update(request["record_ids"])
    return ids


def earlier_removals(ledger: str | Path) -> dict[str, dict[str, Any]]:
    """request id -> its latest entry in the purge ledger that removed rows: a purge run
    again after the rows were already removed (an interrupted or refused one) finds nothing
    in the data, and takes the evidence of the removal from here."""
    ledger = Path(ledger)
    found: dict[str, dict[str, Any]] = {}
    if not ledger.is_file():
        return found
    for line in ledger.read_text(encoding="utf-8").splitlines():
        if line.strip():
            for request in json.loads(line)["requests"]:
                if request.get("rows_removed"):
                    found[request["request_id"]] = request
    return found


# -- what to look for ---------------------------------------------------------------------


def _needles(rows: DataRows, removed: Sequence[int], kept_bytes: bytes) -> list[bytes]:
    """Byte strings that only a purged row can contain: the stored row itself, and each of
    its long string fields (JSON-escaped, as jsonl stores them) that no kept row contains."""
    needles: list[bytes] = []
    for i in removed:
        line = rows.lines[i]
        needles.append(line.encode("utf-8"))
        for value in json.loads(line).values():
            if isinstance(value, str) and len(value) >= MIN_SCAN_CHARS:
                escaped = json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8")
                if escaped not in kept_bytes:
                    needles.append(escaped)
    return list(dict.fromkeys(needles))


def purge_needles(
    requests: Sequence[PurgeRequest], root: str | Path, params: Params
) -> list[bytes]:
    """The byte strings only the requests' rows hold (`_needles`), read from the data before a
    purge, for a scan of every other store afterwards; none once the rows are gone."""
    records_path = Path(root) / params.data.raw / params.data.records_file
    if not records_path.is_file():
        return []
    rows = read_rows(records_path)
    removed = sorted({i for m in match_requests(rows, requests) for i in m.rows})
    removed_set = set(removed)
    kept = "".join(line + "\n" for i, line in enumerate(rows.lines) if i not in removed_set)
    return _needles(rows, removed, kept.encode("utf-8"))


def _contains_any(data: bytes, needles: Sequence[bytes]) -> bool:
    return any(needle in data for needle in needles)


# The datasets library's builders for local files: an older eul read every data file through
# them, and each left an Arrow copy of the whole file in the library's cache.
DATASETS_BUILDERS = ("csv", "json", "parquet")


def datasets_cache_root() -> Path:
    """The datasets library's cache folder, as the library itself finds it."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")
    return Path(home).expanduser() / "datasets"


def _sweep_datasets_cache(needles: Sequence[bytes]) -> dict[str, int]:
    """Delete every cached copy of a local file that holds a purged row: the folder the
    builder made for that file (eul reads without this cache now; older versions did not)."""
    root = datasets_cache_root()
    scanned = removed = 0
    for builder in DATASETS_BUILDERS:
        base = root / builder
        folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        for folder in folders:
            scanned += 1
            _, found = _scan_paths([folder], needles)
            if found:
                shutil.rmtree(folder)
                removed += 1
    return {"folders_scanned": scanned, "folders_removed": removed}


def _scan_paths(paths: Iterable[Path], needles: Sequence[bytes]) -> tuple[int, list[str]]:
    """(files scanned, files holding a needle) under the given files and folders."""
    scanned, found = 0, []
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            scanned += 1
            if needles and _contains_any(path.read_bytes(), needles):
                found.append(str(path))
    return scanned, found


# -- tracked objects ----------------------------------------------------------------------


def _lock_outs(root: Path) -> dict[str, list[tuple[str, str]]]:
    """stage name -> [(out path, md5)] from dvc.lock."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    content = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    return {
        name: [(o["path"], o["md5"]) for o in stage.get("outs", []) if "md5" in o]
        for name, stage in (content.get("stages") or {}).items()
    }


def _expand(root: Path, oids: Iterable[str]) -> set[str]:
    """Object ids plus, for each .dir object in the cache, the ids of the files it lists."""
    cache = root / ".dvc" / "cache"
    found: set[str] = set()
    for oid in oids:
        found.add(oid)
        listing = cache / dvcstore.object_relpath(oid)
        if oid.endswith(".dir") and listing.is_file():
            found.update(entry["md5"] for entry in json.loads(listing.read_text()))
    return found


def _tracked_oids(root: Path, dvc_file: Path, stages: Sequence[str]) -> set[str]:
    oids = [dvcstore.tracked_md5(dvc_file)]
    outs = _lock_outs(root)
    for stage in stages:
        oids += [md5 for _, md5 in outs.get(stage, [])]
    return _expand(root, oids)


def _cache_oids(root: Path) -> set[str]:
    base = root / ".dvc" / "cache" / "files" / "md5"
    if not base.is_dir():
        return set()
    return {p.parent.name + p.name for p in base.glob("*/*") if p.is_file()}


def _workspace_md5(path: Path, tracked: str) -> str | None:
    if not path.exists():
        return None
    return dvcstore.dir_md5(path) if tracked.endswith(".dir") else dvcstore.file_md5(path)


# -- purge --------------------------------------------------------------------------------


def _sweep(root: Path, names: Sequence[str], targets: Sequence[str]) -> None:
    """Push the new version to each remote and drop the unused objects there and from the
    cache (`dvc gc --cloud` sweeps both, so the cache needs its own sweep only without a
    remote)."""
    if not names:
        dvcstore.gc_workspace(root)
    for name in names:
        try:
            dvcstore.push(root, name, targets)
            dvcstore.gc_workspace(root, name)
        except dvcstore.DvcError as err:
            raise PurgeError(f"remote {name} was not swept: {err}") from None


def _check(
    root: Path,
    names: Sequence[str],
    gone: set[str],
    local_paths: Sequence[Path],
    needles: Sequence[bytes],
) -> tuple[list[str], dict[str, Any], list[dict[str, Any]]]:
    """(problems, cache report, remote reports): old objects left anywhere, and stored
    objects that still contain a purged row."""
    cache_left = sorted(gone & _cache_oids(root))
    scanned, found = _scan_paths(local_paths, needles)
    problems = [f"cache still holds {oid}" for oid in cache_left]
    problems += [f"{path} still holds a purged row" for path in found]
    cache = {
        "old_objects_left": len(cache_left),
        "files_scanned": scanned if needles else 0,
        "files_with_purged_rows": len(found),
    }
    reports = []
    for name in names:
        stored = dvcstore.remote_oids(root, name)
        left = gone & stored
        hits = set()
        if needles:
            ordered = sorted(stored)
            objects = dvcstore.read_remote_objects(root, name, ordered)
            hits = {oid for oid, data in zip(ordered, objects, strict=True)
                    if _contains_any(data, needles)}  # fmt: skip
        problems += [f"remote {name} still holds {oid}" for oid in sorted(left | hits)]
        reports.append(
            {
                "name": name,
                "objects": len(stored),
                "old_objects_left": len(left),
                "objects_with_purged_rows": len(hits),
                "scanned": bool(needles),
            }
        )
    return problems, cache, reports


@dataclass(frozen=True)
class _Target:
    """What a purge works on, checked before anything is changed."""

    root: Path
    params: Params
    raw_dir: Path
    dvc_file: Path
    old_md5: str
    remotes: list[str]
    rebuild: list[str]
    old_oids: set[str]


def _target(root: Path, params: Params, remotes: Sequence[str] | None) -> _Target:
    """The data, remotes and stages of the purge; refused when the workspace differs from
    data.dvc or a remote is unknown."""
    raw_dir = root / params.data.raw
    dvc_file = root / params.data.dvc_file
    old_md5 = dvcstore.tracked_md5(dvc_file)
    if _workspace_md5(raw_dir, old_md5) != old_md5:
        raise PurgeError(
            f"{params.data.raw} is missing or differs from {params.data.dvc_file}; "
            "run `dvc pull` (or `dvc add` your changes) first"
        )
    configured = dvcstore.remotes(root)
    names = list(remotes) if remotes is not None else sorted(configured)
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise PurgeError(f"no remote named {', '.join(unknown)}; see `dvc remote list`")
    rebuild = [s for s in params.purge.rebuild if s in _lock_outs(root)]
    old_oids = _tracked_oids(root, dvc_file, rebuild)
    if old_md5.endswith(".dir"):
        old_oids.update(entry["md5"] for entry in dvcstore.dir_entries(raw_dir))
    return _Target(root, params, raw_dir, dvc_file, old_md5, names, rebuild, old_oids)


def _new_evidence(
    target: _Target, rows: DataRows, matches: Sequence[Any], key: bytes
) -> dict[str, Any]:
    """The evidence before any change: per request, the removed rows' ids and keyed
    digests, and the subject keyed."""
    removed = {i for m in matches for i in m.rows}
    return {
        "purged_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dvc_file": target.params.data.dvc_file,
        "old_md5": target.old_md5,
        "new_md5": target.old_md5,
        "rows_removed": len(removed),
        "requests": [
            {
                "request_id": m.request_id,
                "subject_hmac": keyed_subject(key, m.subject_id),
                "rows_removed": len(m.rows),
                "record_ids": [rows.record_ids[i] for i in m.rows],
                "row_hmac": [keyed_row(key, rows.lines[i]) for i in m.rows],
                "missing_record_ids": m.missing_record_ids,
            }
            for m in matches
        ],
        "rebuilt_stages": target.rebuild,
        "remotes_swept": target.remotes,
    }


def _rewrite_and_sweep(
    target: _Target,
    records_path: Path,
    kept_bytes: bytes | None,
    needles: Sequence[bytes],
    evidence: dict[str, Any],
) -> list[str]:
    """Write the kept rows (None: nothing removed), rebuild the stages, sweep cache and
    remotes, and check them; returns the problems the check found."""
    root, params, rebuild = target.root, target.params, target.rebuild
    if kept_bytes is not None:
        tmp = records_path.with_name(records_path.name + ".purge-tmp")
        tmp.write_bytes(kept_bytes)
        os.replace(tmp, records_path)
        evidence["new_md5"] = dvcstore.add(root, params.data.raw, params.data.dvc_file)
    if rebuild:
        # Also when nothing was removed: an interrupted purge may have left them stale.
        dvcstore.run_dvc(["repro", *rebuild], root)
    gone = target.old_oids - _tracked_oids(root, target.dvc_file, rebuild)
    evidence["removed_objects"] = sorted(gone)
    _sweep(root, target.remotes, [params.data.dvc_file, *rebuild])
    local_paths = [root / ".dvc", target.raw_dir]
    local_paths += [root / path for stage in rebuild for path, _ in _lock_outs(root)[stage]]
    problems, evidence["cache"], evidence["remotes"] = _check(
        root, target.remotes, gone, local_paths, needles
    )
    if needles:
        try:
            evidence["datasets_cache"] = _sweep_datasets_cache(needles)
        except OSError as err:
            problems.append(f"the datasets cache was not swept: {err}")
    return problems


def _write_entry(ledger: Path, entry: dict[str, Any], replace_intent: bool) -> None:
    """Append `entry` to the ledger; with `replace_intent`, in place of the intent entry
    this run appended last (so a run that ends, cleanly or not, leaves one entry)."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    lines = ledger.read_text(encoding="utf-8").splitlines() if ledger.is_file() else []
    if replace_intent and lines and json.loads(lines[-1]).get("intent"):
        lines.pop()
    lines.append(json.dumps(entry, sort_keys=True))
    tmp = ledger.with_name(ledger.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, ledger)


def purge(
    requests: Sequence[PurgeRequest],
    root: str | Path = ".",
    params: Params | None = None,
    remotes: Sequence[str] | None = None,
    scan: bool = True,
) -> dict[str, Any]:
    """Remove the requests' rows everywhere DVC keeps data; return the evidence.

    `remotes` defaults to every configured remote. The evidence lists, per request, the
    keyed digest of each removed row (the HMAC of its canonical SHA-256 under the evidence
    key of the project at `root`), the old and new data.dvc md5, the stages
    rebuilt and, per remote, what the check found. It is appended to the ledger even when
    a step fails (with `clean` false), so the removed record ids are never lost; running the
    same purge again finishes an interrupted one.
    """
    root = Path(root)
    if params is None:
        params = load_params(root / "params.yaml" if (root / "params.yaml").is_file() else None)
    if not requests:
        raise PurgeError("no requests to purge")
    target = _target(root, params, remotes)
    records_path = target.raw_dir / params.data.records_file
    rows = read_rows(records_path)
    matches = match_requests(rows, requests)
    removed = sorted({i for m in matches for i in m.rows})
    removed_set = set(removed)
    kept = "".join(line + "\n" for i, line in enumerate(rows.lines) if i not in removed_set)
    kept_bytes = kept.encode("utf-8")
    needles = _needles(rows, removed, kept_bytes) if scan else []
    evidence = _new_evidence(target, rows, matches, evidence_key(root))
    del rows  # the purged rows' text is not needed past this point (only `needles` are)

    problems: list[str] = []
    finished = False
    ledger = root / params.purge.ledger
    # the evidence is in the ledger before any row goes: a process killed mid purge (no
    # `finally` runs) leaves it there for the rerun, which finds the rows already gone
    _write_entry(ledger, {**evidence, "clean": False, "intent": True}, replace_intent=False)
    try:
        problems = _rewrite_and_sweep(
            target, records_path, kept_bytes if removed else None, needles, evidence
        )
        finished = True
    except (PurgeError, dvcstore.DvcError) as err:
        problems.append(str(err))
        raise PurgeError(
            f"purge of {len(removed)} rows did not finish: {err}; run it again to finish"
        ) from None
    finally:
        evidence["clean"] = finished and not problems
        _write_entry(ledger, evidence, replace_intent=True)
    if problems:
        raise PurgeError(f"purge check failed: {'; '.join(problems[:5])}")
    return evidence
