"""The leak scan: every store the pipeline writes is read back to show that purged data is gone.

The purge deletes what it knows about; the scan does not trust that list. It reads the data
folders, the DVC cache and every remote, MLflow's database and artifacts, Prefect's database
and result storage, the datasets library's cache, `state/`, the working folder and the
temporary folders eul made (their names start with `eul-`), and looks for three things:

- raw needles: byte strings only a purged row holds, while the caller still has them (the
  purge does, until it marks the requests `purged`);
- keyed rows: each line (or JSON document) that parses as a JSON object, and each object
  nested in one, is hashed the way the log keeps a purged row (`keyed_row`) and compared
  with the purged rows' digests, so the scan works long after the text is gone;
- per-request files: a purged request's layer folder (`layers/<layer key>`), its forget file
  (`forget/<request>.jsonl`) and its MLflow request run, if that still has artifacts.

The report holds counts and the paths of hits, never text. A store that cannot be read is an
error, and an error makes the report not clean: a scan that could not look proves nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eul.pipeline.context import Context
from eul.pipeline.leak_reading import (
    StoreReport,
    StoreScan,
    dir_listing,
    file_blocks,
    read_database,
    shown_url,
    sqlite_path,
    targets_for,
)
from eul.runtime.evidence import evidence_key, keyed
from eul.runtime.scratch import scratch_entries, scratch_folder, scratch_pattern
from eul.stores.dvc import dvcstore
from eul.stores.dvc.purge import datasets_cache_root

# Every temporary folder or file eul makes starts with this, so the scan finds leftovers.
# The demo keeps Prefect's home inside its project folder.
PROJECT_PREFECT_DIR = ".prefect"


@dataclass(frozen=True)
class LeakReport:
    """The scan of every store: clean when no store has a hit and every store was read."""

    stores: tuple[StoreReport, ...]
    request_ids: tuple[str, ...]
    needles: int
    keyed_rows: int

    @property
    def hits(self) -> int:
        return sum(s.hits for s in self.stores)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(f"{s.store}: {s.error}" for s in self.stores if s.error)

    @property
    def clean(self) -> bool:
        return self.hits == 0 and not self.errors

    def store(self, name: str) -> StoreReport:
        """The report of store `name` (KeyError when it was not scanned)."""
        for report in self.stores:
            if report.store == name:
                return report
        raise KeyError(f"no store {name!r} in the scan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "hits": self.hits,
            "errors": list(self.errors),
            "request_ids": list(self.request_ids),
            "needles": self.needles,
            "keyed_rows": self.keyed_rows,
            "stores": [s.to_dict() for s in self.stores],
        }


# -- the stores ---------------------------------------------------------------------------


def _guarded(store: StoreScan, work: Any) -> StoreReport:
    """Run the store's reading; a failure is the store's error, not the scan's end."""
    try:
        work(store)
    except Exception as err:  # noqa: BLE001  (any store may fail its own way; it is reported)
        text = str(err).strip().splitlines()
        store.error = f"{type(err).__name__}: {text[0] if text else 'no message'}"
    return store.report()


def _local_folder(location: str) -> Path | None:
    if location.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(location).path))
    if "://" not in location:
        return Path(location)
    return None


def _dvc_remote(name: str) -> Any:
    def work(store: StoreScan) -> None:
        root = store.root
        oids = sorted(dvcstore.remote_oids(root, name))
        if not store.targets.reads_content:
            store.files = len(oids)
        else:
            objects = dvcstore.read_remote_objects(root, name, oids)
            for oid, data in zip(oids, objects, strict=True):
                label = f"{name}:{dvcstore.object_relpath(oid)}"
                store.blob(label, [data])
                if oid.endswith(".dir"):
                    listed = dir_listing(data, store.targets)
                    store.requests += [f"{label} lists {hit}" for hit in listed]

    return work


def _mlflow_artifacts(ctx: Context, request_ids: Sequence[str]) -> Any:
    location = ctx.settings.artifact_location

    def work(store: StoreScan) -> None:
        folder = _local_folder(location)
        if folder is not None:
            if not folder.exists():
                store.note = "no artifact folder"
            store.tree(folder)
        else:
            _remote_artifacts(ctx, store)
        if request_ids and _tracking_store_exists(ctx):
            for run_id, request_id in _request_runs_with_artifacts(ctx, set(request_ids)):
                store.requests.append(f"mlflow run {run_id} (request {request_id})")

    return work


def _remote_artifacts(ctx: Context, store: StoreScan) -> None:
    """Artifacts on S3 (or any store MLflow reaches), listed and downloaded one by one."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from eul.stores.registry.settings import tracking

    location = ctx.settings.artifact_location.rstrip("/")
    with tracking(ctx.settings), scratch_folder("scan") as tmp:
        repo = get_artifact_repository(location)
        folders: list[str | None] = [None]
        while folders:
            for info in repo.list_artifacts(folders.pop()):
                if info.is_dir:
                    folders.append(info.path)
                    continue
                local = Path(repo.download_artifacts(info.path, tmp))
                parts = info.path.split("/")
                store.request_file(parts, lambda at, p=parts: f"{location}/{'/'.join(p[: at + 1])}")
                if store.targets.reads_content:
                    store.blob(f"{location}/{info.path}", file_blocks(local))
                else:
                    store.files += 1
                    store.size += local.stat().st_size
                local.unlink()


def _tracking_store_exists(ctx: Context) -> bool:
    path = sqlite_path(ctx.settings.tracking_uri)
    return path is None or path.is_file()


def _request_runs_with_artifacts(ctx: Context, request_ids: set[str]) -> list[tuple[str, str]]:
    """(run id, request id) of every request run of `request_ids` that still has artifacts,
    deleted runs and experiments included (MLflow keeps their artifacts until `mlflow gc`)."""
    from mlflow.entities import ViewType

    from eul.stores.registry.settings import tracking

    found = []
    with tracking(ctx.settings) as client:
        experiments = client.search_experiments(view_type=ViewType.ALL)
        ids = [e.experiment_id for e in experiments]
        token = None
        while ids:
            page = client.search_runs(
                ids,
                filter_string="tags.`eul.kind` = 'request'",
                run_view_type=ViewType.ALL,
                max_results=1000,
                page_token=token,
            )
            for run in page:
                request_id = run.data.tags.get("eul.request_id")
                if request_id in request_ids and client.list_artifacts(run.info.run_id):
                    found.append((run.info.run_id, request_id))
            token = page.token
            if not token:
                break
    return found


def _mlflowread_database(ctx: Context) -> Any:
    uri = ctx.settings.tracking_uri

    def work(store: StoreScan) -> None:
        folder = _local_folder(uri)
        if folder is not None:
            store.tree(folder)
        elif uri.split(":", 1)[0] in ("http", "https", "databricks"):
            store.note = "an MLflow server: scan its database where it runs"
        else:
            read_database(store, uri)

    return work


def prefect_locations(root: Path) -> tuple[list[str], list[Path]]:
    """(database URLs, result storage folders) of Prefect, read the way Prefect 3 reads
    them, without importing it: the environment, else the active profile in
    `$PREFECT_HOME/profiles.toml`, else the defaults. The demo's home inside the project
    (`.prefect/`) counts too."""
    env = dict(os.environ)
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    settings = {**_profile_settings(home, env), **env}
    home = Path(settings.get("PREFECT_HOME") or home).expanduser()

    def setting(*names: str) -> str | None:
        for name in names:
            if settings.get(name):
                return str(settings[name]).replace("$PREFECT_HOME", str(home))
        return None

    homes = [home]
    local = root / PROJECT_PREFECT_DIR
    if local.is_dir() and local.resolve() != home.resolve():
        homes.append(local)
    url = setting("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
    urls = [url] if url else []
    urls += [f"sqlite+aiosqlite:///{h / 'prefect.db'}" for h in homes[0 if not url else 1 :]]
    storage = setting("PREFECT_RESULTS_LOCAL_STORAGE_PATH", "PREFECT_LOCAL_STORAGE_PATH")
    folders = [Path(storage).expanduser()] if storage else []
    folders += [h / "storage" for h in homes[0 if not storage else 1 :]]
    running_url, running_storage = _running_prefect()
    if running_url and running_url not in urls:
        urls.append(running_url)
    if running_storage and running_storage not in folders:
        folders.append(running_storage)
    return urls, folders


def _running_prefect() -> tuple[str | None, Path | None]:
    """(database URL, result folder) of the Prefect this process already runs (a flow that
    purges, a test harness with temporary settings), which may differ from what the
    environment says; Prefect is not imported for this."""
    import sys

    if "prefect.settings" not in sys.modules:
        return None, None
    settings = sys.modules["prefect.settings"].get_current_settings()
    secret = settings.server.database.connection_url
    url = secret.get_secret_value() if secret is not None else None
    return url or None, Path(settings.results.local_storage_path).expanduser()


def _profile_settings(home: Path, env: dict[str, str]) -> dict[str, str]:
    path = Path(env.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        import tomllib
    except ImportError:  # Python 3.10: Prefect itself reads profiles with tomli then
        try:
            import tomli as tomllib
        except ImportError:
            return {}
    if not path.is_file():
        return {}
    try:
        content = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    name = env.get("PREFECT_PROFILE") or content.get("active") or "ephemeral"
    profile = (content.get("profiles") or {}).get(name) or {}
    return {str(k): str(v) for k, v in profile.items()}


def _prefect_databases(urls: Sequence[str]) -> Any:
    def work(store: StoreScan) -> None:
        notes = []
        for url in urls:
            read_database(store, url)
            if store.note:
                notes.append(f"{shown_url(url)}: {store.note}")
                store.note = None
        store.note = "; ".join(notes) or None

    return work


def _folders(paths: Sequence[Path]) -> Any:
    def work(store: StoreScan) -> None:
        for path in paths:
            store.tree(path)

    return work


def scan_leaks(
    ctx: Context,
    request_ids: Iterable[str],
    needles: Iterable[bytes] = (),
    keyed_rows: Iterable[str] = (),
    *,
    temp_root: str | Path | None = None,
) -> LeakReport:
    """Read every store the pipeline writes for the purged requests' rows and files.

    `needles`: byte strings only a purged row holds (while the caller still has the text);
    `keyed_rows`: the purged rows' keyed digests (`hmac-sha256:...`; a plain SHA-256 of a
    row is keyed here with the project's evidence key); `request_ids`: the purged requests,
    whose own files must be gone. `temp_root` defaults to `tempfile.gettempdir()`.
    """
    root = ctx.root
    request_ids = tuple(dict.fromkeys(request_ids))
    targets = targets_for(root, request_ids, needles, keyed_rows)
    params = ctx.params
    temp = Path(temp_root) if temp_root is not None else Path(tempfile.gettempdir())
    data = [root / params.data.raw, root / params.prepare.out, root / params.partition.out]
    data.append(root / params.purge.ledger)
    remotes = dvcstore.remotes(root) if (root / ".dvc").is_dir() else {}
    prefect_urls, prefect_folders = prefect_locations(root)
    plan: list[tuple[str, str, Any]] = [
        ("data", ", ".join(_shown_paths(root, data)), _folders(data)),
        ("dvc-cache", ".dvc/cache", _folders([root / ".dvc" / "cache"])),
    ]
    plan += [(f"dvc-remote:{n}", shown_url(u), _dvc_remote(n)) for n, u in sorted(remotes.items())]
    plan += [
        ("mlflow-db", shown_url(ctx.settings.tracking_uri), _mlflowread_database(ctx)),
        ("mlflow-artifacts", ctx.settings.artifact_location, _mlflow_artifacts(ctx, request_ids)),
        ("prefect-db", ", ".join(map(shown_url, prefect_urls)), _prefect_databases(prefect_urls)),
        ("prefect-results", ", ".join(map(str, prefect_folders)), _folders(prefect_folders)),
        ("datasets-cache", str(datasets_cache_root()), _folders([datasets_cache_root()])),
        ("workdir", params.pipeline.workdir, _folders([ctx.workdir])),
        ("state", "state", _folders([root / "state"])),
        ("temp", str(temp / scratch_pattern()), _folders(scratch_entries(temp))),
    ]
    seen: set[Path] = set()
    reports = tuple(
        _guarded(StoreScan(name, location, root, targets, seen), work)
        for name, location, work in plan
    )
    return LeakReport(reports, request_ids, len(targets.needles), len(targets.rows))


def _shown_paths(root: Path, paths: Sequence[Path]) -> list[str]:
    shown = []
    for path in paths:
        try:
            shown.append(path.relative_to(root).as_posix())
        except ValueError:
            shown.append(str(path))
    return shown


# -- what the log says was purged ---------------------------------------------------------


@dataclass(frozen=True)
class Purged:
    """The purged requests of the log and their rows' keyed digests."""

    request_ids: tuple[str, ...]
    keyed_rows: tuple[str, ...]


def purged_in_log(ctx: Context) -> Purged:
    """Every `purged` entry's request and rows: `row_hmac` of its evidence, else its older
    `row_sha256` values keyed with the project's evidence key."""
    path = sqlite_path(ctx.log_url)
    if path is not None and not path.is_file():
        return Purged((), ())
    with ctx.ledger() as ledger:
        entries = ledger.entries(["purged"])
    request_ids: list[str] = []
    rows: list[str] = []
    plain: list[str] = []
    for entry in entries:
        request_ids.append(entry.request_id)
        evidence = entry.details.get("evidence") or {}
        hmacs = evidence.get("row_hmac")
        if isinstance(hmacs, list):
            rows += [str(h) for h in hmacs]
        elif isinstance(evidence.get("row_sha256"), list):
            plain += [str(h) for h in evidence["row_sha256"]]
    if plain:
        key = evidence_key(ctx.root)
        rows += [keyed(key, h) for h in plain]
    return Purged(tuple(dict.fromkeys(request_ids)), tuple(dict.fromkeys(rows)))
