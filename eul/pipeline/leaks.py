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

import hashlib
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eul.pipeline.context import Context
from eul.pipeline.files import layer_key
from eul.runtime.evidence import canonical_bytes, evidence_key, keyed
from eul.stores.dvc import dvcstore
from eul.stores.dvc.partition import FORGET_DIR, forget_filename
from eul.stores.dvc.purge import datasets_cache_root

# Every temporary folder or file eul makes starts with this, so the scan finds leftovers.
TEMP_PREFIX = "eul-"
# The demo keeps Prefect's home inside its project folder.
PROJECT_PREFECT_DIR = ".prefect"
_BLOCK = 4 << 20
# A line longer than this is not a stored row: it is skipped in the keyed comparison.
_MAX_LINE = 1 << 20
_MAX_JSON_DOC = 64 << 20


class LeakScanError(RuntimeError):
    """The scan cannot start (no project, no key); the message says what to fix."""


@dataclass(frozen=True)
class StoreReport:
    """What the scan read in one store and where it found purged data (paths only)."""

    store: str
    location: str
    files_scanned: int = 0
    bytes_scanned: int = 0
    text_hits: tuple[str, ...] = ()
    keyed_hits: tuple[str, ...] = ()
    request_file_hits: tuple[str, ...] = ()
    error: str | None = None
    note: str | None = None

    @property
    def hits(self) -> int:
        return len(self.text_hits) + len(self.keyed_hits) + len(self.request_file_hits)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hits": self.hits}


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


# -- what to look for ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Targets:
    needles: tuple[bytes, ...]
    rows: frozenset[str]
    key: bytes
    # (folder name, entry name) pairs that only a purged request's own files have
    request_parts: frozenset[tuple[str, str]]

    @property
    def reads_content(self) -> bool:
        return bool(self.needles or self.rows)

    def keyed_object(self, obj: Any) -> bool:
        """Whether `obj`, or any object nested in it, is a purged row."""
        stack = [obj]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                digest = hashlib.sha256(canonical_bytes(value)).hexdigest()
                if keyed(self.key, digest) in self.rows:
                    return True
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
        return False

    def keyed_line(self, line: bytes) -> bool:
        text = line.strip()
        if not (text.startswith(b"{") and text.endswith(b"}")):
            return False
        try:
            obj = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return False
        return self.keyed_object(obj)

    def request_path(self, parts: Sequence[str]) -> int | None:
        """The index of the part naming a purged request's file, or None."""
        for i in range(len(parts) - 1):
            if (parts[i], parts[i + 1]) in self.request_parts:
                return i + 1
        return None


def _targets(
    root: Path, request_ids: Iterable[str], needles: Iterable[bytes], keyed_rows: Iterable[str]
) -> _Targets:
    rows = list(keyed_rows)
    key = evidence_key(root) if rows else b""
    parts = set()
    for request_id in request_ids:
        parts.add(("layers", layer_key(request_id)))
        parts.add((FORGET_DIR, forget_filename(request_id)))
    return _Targets(
        needles=tuple(n for n in dict.fromkeys(needles) if n),
        rows=frozenset(keyed(key, r) for r in rows),
        key=key,
        request_parts=frozenset(parts),
    )


# -- reading ------------------------------------------------------------------------------


def _stream(chunks: Iterable[bytes], targets: _Targets) -> tuple[int, bool, bool]:
    """(bytes read, holds a needle, holds a keyed row) of a byte stream, block by block:
    a needle may span two blocks, a row is one line."""
    longest = max((len(n) for n in targets.needles), default=0)
    size, text_hit, keyed_hit = 0, False, False
    tail, pending, skipping = b"", b"", False
    for block in chunks:
        size += len(block)
        if targets.needles and not text_hit:
            window = tail + block
            text_hit = any(n in window for n in targets.needles)
            tail = window[-(longest - 1) :] if longest > 1 else b""
        if targets.rows and not keyed_hit:
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if skipping:
                    skipping = False
                elif targets.keyed_line(line):
                    keyed_hit = True
                    break
            if len(pending) > _MAX_LINE:
                pending, skipping = b"", True
    if targets.rows and not keyed_hit and pending and not skipping:
        keyed_hit = targets.keyed_line(pending)
    return size, text_hit, keyed_hit


def _file_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(_BLOCK), b"")


def _json_document(path: Path, targets: _Targets) -> bool:
    """A .json file is one document: any object in it may be a row."""
    if not targets.rows or path.suffix != ".json" or path.stat().st_size > _MAX_JSON_DOC:
        return False
    try:
        return targets.keyed_object(json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, ValueError):
        return False


def _dir_listing(data: bytes, targets: _Targets) -> list[str]:
    """The per-request files a DVC `.dir` object lists."""
    try:
        entries = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return []
    found = []
    for entry in entries if isinstance(entries, list) else []:
        relpath = entry.get("relpath") if isinstance(entry, dict) else None
        if isinstance(relpath, str):
            parts = relpath.split("/")
            at = targets.request_path(parts)
            if at is not None:
                found.append("/".join(parts[: at + 1]))
    return found


def _shown(url: str) -> str:
    """A URL without the password it may hold."""
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)


@dataclass
class _Store:
    """One store's findings while it is being read."""

    name: str
    location: str
    root: Path
    targets: _Targets
    seen: set[Path]
    files: int = 0
    size: int = 0
    text: list[str] = field(default_factory=list)
    keyed_: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    error: str | None = None
    note: str | None = None

    def label(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def blob(self, label: str, chunks: Iterable[bytes]) -> int:
        """Read one object; returns its size."""
        size, text_hit, keyed_hit = _stream(chunks, self.targets)
        self.files += 1
        self.size += size
        if text_hit:
            self.text.append(label)
        if keyed_hit:
            self.keyed_.append(label)
        return size

    def request_file(self, parts: Sequence[str], label_of: Any) -> None:
        at = self.targets.request_path(parts)
        if at is not None:
            hit = label_of(at)
            if hit not in self.requests:
                self.requests.append(hit)

    def file(self, path: Path) -> None:
        resolved = path.resolve()
        if resolved in self.seen:
            return
        self.seen.add(resolved)
        parts = path.parts
        self.request_file(parts, lambda at: self.label(Path(*parts[: at + 1])))
        label = self.label(path)
        if not self.targets.reads_content:
            self.files += 1
            self.size += path.stat().st_size
            return
        self.blob(label, _file_blocks(path))
        if label not in self.keyed_ and _json_document(path, self.targets):
            self.keyed_.append(label)
        if path.name.endswith(".dir") and path.stat().st_size <= _MAX_JSON_DOC:
            for hit in _dir_listing(path.read_bytes(), self.targets):
                self.requests.append(f"{label} lists {hit}")

    def tree(self, top: Path) -> None:
        """Every plain file under `top` (a file or a folder); links are not followed."""
        if top.is_symlink() or not top.exists():
            return
        if top.is_file():
            self.file(top)
            return
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    self.file(path)

    def value(self, label: str, value: Any) -> None:
        """One database value: text or bytes are read like a file's content."""
        if isinstance(value, str):
            data = value.encode("utf-8", errors="surrogatepass")
        elif isinstance(value, bytes | memoryview):
            data = bytes(value)
        else:
            return
        size, text_hit, keyed_hit = _stream([data], self.targets)
        self.size += size
        if text_hit and label not in self.text:
            self.text.append(label)
        if keyed_hit and label not in self.keyed_:
            self.keyed_.append(label)

    def report(self) -> StoreReport:
        return StoreReport(
            store=self.name,
            location=self.location,
            files_scanned=self.files,
            bytes_scanned=self.size,
            text_hits=tuple(self.text),
            keyed_hits=tuple(self.keyed_),
            request_file_hits=tuple(self.requests),
            error=self.error,
            note=self.note,
        )


# -- databases ----------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (any driver: sqlite+aiosqlite too), else None."""
    match = re.match(r"^sqlite(\+\w+)?:///(.*)$", url)
    if not match or not match.group(2) or ":memory:" in url:
        return None
    return Path(match.group(2).split("?", 1)[0])


def _sqlite_values(path: Path) -> Iterator[tuple[str, Any]]:
    """(table.column, value) of every text or blob value of a SQLite file, read-only."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608  (names from the file)
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, str | bytes):
                        yield f"{table}.{column}", value
    finally:
        conn.close()


def _sql_values(url: str) -> Iterator[tuple[str, Any]]:
    """(table.column, value) of every text column of any SQLAlchemy database."""
    from sqlalchemy import MetaData as SqlMetaData
    from sqlalchemy import String, Text, create_engine, select

    sync_url = re.sub(r"^(\w+)\+(asyncpg|aiosqlite|aiomysql)", r"\1", url)
    engine = create_engine(sync_url)
    try:
        meta = SqlMetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, String | Text)]
                if not columns:
                    continue
                for row in conn.execute(select(*columns)):
                    for column, value in zip(columns, row, strict=True):
                        yield f"{table.name}.{column.name}", value
    finally:
        engine.dispose()


def _database(store: _Store, url: str) -> None:
    """A SQLite file is read twice: its bytes (deleted rows linger in free pages) and its
    values (a long one is split over overflow pages); any other database by its values."""
    path = _sqlite_path(url)
    if path is not None:
        if not path.is_file():
            store.note = "no database file"
            return
        for suffix in ("", "-wal", "-journal"):
            store.tree(Path(str(path) + suffix))
        if store.targets.reads_content:
            for column, value in _sqlite_values(path):
                store.value(f"{store.label(path)}#{column}", value)
        return
    store.files += 1
    if store.targets.reads_content:
        for column, value in _sql_values(url):
            store.value(f"{_shown(url)}#{column}", value)


# -- the stores ---------------------------------------------------------------------------


def _guarded(store: _Store, work: Any) -> StoreReport:
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
    def work(store: _Store) -> None:
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
                    listed = _dir_listing(data, store.targets)
                    store.requests += [f"{label} lists {hit}" for hit in listed]

    return work


def _mlflow_artifacts(ctx: Context, request_ids: Sequence[str]) -> Any:
    location = ctx.settings.artifact_location

    def work(store: _Store) -> None:
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


def _remote_artifacts(ctx: Context, store: _Store) -> None:
    """Artifacts on S3 (or any store MLflow reaches), listed and downloaded one by one."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from eul.stores.registry.settings import tracking

    location = ctx.settings.artifact_location.rstrip("/")
    with tracking(ctx.settings), tempfile.TemporaryDirectory(prefix=TEMP_PREFIX + "scan-") as tmp:
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
                    store.blob(f"{location}/{info.path}", _file_blocks(local))
                else:
                    store.files += 1
                    store.size += local.stat().st_size
                local.unlink()


def _tracking_store_exists(ctx: Context) -> bool:
    path = _sqlite_path(ctx.settings.tracking_uri)
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


def _mlflow_database(ctx: Context) -> Any:
    uri = ctx.settings.tracking_uri

    def work(store: _Store) -> None:
        folder = _local_folder(uri)
        if folder is not None:
            store.tree(folder)
        elif uri.split(":", 1)[0] in ("http", "https", "databricks"):
            store.note = "an MLflow server: scan its database where it runs"
        else:
            _database(store, uri)

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
    return urls, folders


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
    def work(store: _Store) -> None:
        notes = []
        for url in urls:
            _database(store, url)
            if store.note:
                notes.append(f"{_shown(url)}: {store.note}")
                store.note = None
        store.note = "; ".join(notes) or None

    return work


def _folders(paths: Sequence[Path]) -> Any:
    def work(store: _Store) -> None:
        for path in paths:
            store.tree(path)

    return work


def _temp_entries(temp_root: Path) -> list[Path]:
    if not temp_root.is_dir():
        return []
    return sorted(p for p in temp_root.iterdir() if p.name.startswith(TEMP_PREFIX))


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
    targets = _targets(root, request_ids, needles, keyed_rows)
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
    plan += [(f"dvc-remote:{n}", _shown(u), _dvc_remote(n)) for n, u in sorted(remotes.items())]
    plan += [
        ("mlflow-db", _shown(ctx.settings.tracking_uri), _mlflow_database(ctx)),
        ("mlflow-artifacts", ctx.settings.artifact_location, _mlflow_artifacts(ctx, request_ids)),
        ("prefect-db", ", ".join(map(_shown, prefect_urls)), _prefect_databases(prefect_urls)),
        ("prefect-results", ", ".join(map(str, prefect_folders)), _folders(prefect_folders)),
        ("datasets-cache", str(datasets_cache_root()), _folders([datasets_cache_root()])),
        ("workdir", params.pipeline.workdir, _folders([ctx.workdir])),
        ("state", "state", _folders([root / "state"])),
        ("temp", str(temp / (TEMP_PREFIX + "*")), _folders(_temp_entries(temp))),
    ]
    seen: set[Path] = set()
    reports = tuple(
        _guarded(_Store(name, location, root, targets, seen), work) for name, location, work in plan
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
    path = _sqlite_path(ctx.log_url)
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
