"""How the leak scan reads one store: byte streams searched for needles, lines and JSON
documents hashed the way the log keeps a purged row, paths matched against a purged
request's own files, and databases read both as files and value by value.

Nothing here keeps or returns what it read: only sizes, and the labels of what matched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eul.pipeline.files import layer_key
from eul.runtime.evidence import canonical_bytes, evidence_key, keyed
from eul.runtime.urls import shown_url  # noqa: F401  (re-exported)
from eul.stores.dvc.partition import FORGET_DIR, forget_filename

_BLOCK = 4 << 20
# A line longer than this is not a stored row: it is skipped in the keyed comparison.
_MAX_LINE = 1 << 20
_MAX_JSON_DOC = 64 << 20
# The md5 of an empty file, as a DVC `.dir` listing names it.
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


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


# -- what to look for ---------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
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


def targets_for(
    root: Path, request_ids: Iterable[str], needles: Iterable[bytes], keyed_rows: Iterable[str]
) -> Targets:
    rows = list(keyed_rows)
    key = evidence_key(root) if rows else b""
    parts = set()
    for request_id in request_ids:
        parts.add(("layers", layer_key(request_id)))
        parts.add((FORGET_DIR, forget_filename(request_id)))
    return Targets(
        needles=tuple(n for n in dict.fromkeys(needles) if n),
        rows=frozenset(keyed(key, r) for r in rows),
        key=key,
        request_parts=frozenset(parts),
    )


# -- reading ------------------------------------------------------------------------------


def read_stream(chunks: Iterable[bytes], targets: Targets) -> tuple[int, bool, bool]:
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


def file_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(_BLOCK), b"")


def _json_document(path: Path, targets: Targets) -> bool:
    """A .json file is one document: any object in it may be a row."""
    if not targets.rows or path.suffix != ".json" or path.stat().st_size > _MAX_JSON_DOC:
        return False
    try:
        return targets.keyed_object(json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, ValueError):
        return False


def dir_listing(data: bytes, targets: Targets) -> list[str]:
    """The per-request files a DVC `.dir` object lists (empty ones aside)."""
    try:
        entries = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return []
    found = []
    for entry in entries if isinstance(entries, list) else []:
        relpath = entry.get("relpath") if isinstance(entry, dict) else None
        if isinstance(relpath, str) and entry.get("md5") != EMPTY_MD5:
            parts = relpath.split("/")
            at = targets.request_path(parts)
            if at is not None:
                found.append("/".join(parts[: at + 1]))
    return found


@dataclass
class StoreScan:
    """One store's findings while it is being read."""

    name: str
    location: str
    root: Path
    targets: Targets
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
        size, text_hit, keyed_hit = read_stream(chunks, self.targets)
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
        if path.stat().st_size > 0:  # an empty file (a forget set of no rows) holds nothing
            self.request_file(parts, lambda at: self.label(Path(*parts[: at + 1])))
        label = self.label(path)
        if not self.targets.reads_content:
            self.files += 1
            self.size += path.stat().st_size
            return
        self.blob(label, file_blocks(path))
        if label not in self.keyed_ and _json_document(path, self.targets):
            self.keyed_.append(label)
        if path.name.endswith(".dir") and path.stat().st_size <= _MAX_JSON_DOC:
            for hit in dir_listing(path.read_bytes(), self.targets):
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
        size, text_hit, keyed_hit = read_stream([data], self.targets)
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


def sqlite_path(url: str) -> Path | None:
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


# A server's asynchronous driver (Prefect's asyncpg) and the synchronous one read with: for
# PostgreSQL psycopg2, the driver eul installs (SQLAlchemy 2.1's default is psycopg 3).
_SYNC_DRIVERS = {"asyncpg": "+psycopg2", "aiosqlite": "", "aiomysql": ""}


def sync_database_url(url: str) -> str:
    """`url` with an asynchronous driver swapped for a synchronous one eul can read it with."""
    return re.sub(
        r"^(\w+)\+(asyncpg|aiosqlite|aiomysql)(?=:)",
        lambda match: match[1] + _SYNC_DRIVERS[match[2]],
        url,
    )


def _sql_values(url: str) -> Iterator[tuple[str, Any]]:
    """(table.column, value) of every text column of any SQLAlchemy database."""
    from sqlalchemy import MetaData as SqlMetaData
    from sqlalchemy import String, Text, create_engine, select

    sync_url = sync_database_url(url)
    engine = create_engine(sync_url)
    try:
        meta = SqlMetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            # (not `sorted_tables`: Prefect's tables refer to each other in a cycle)
            for table in meta.tables.values():
                columns = [c for c in table.columns if isinstance(c.type, String | Text)]
                if not columns:
                    continue
                for row in conn.execute(select(*columns)):
                    for column, value in zip(columns, row, strict=True):
                        yield f"{table.name}.{column.name}", value
    finally:
        engine.dispose()


def read_database(store: StoreScan, url: str) -> None:
    """A SQLite file is read twice: its bytes (deleted rows linger in free pages) and its
    values (a long one is split over overflow pages); any other database by its values."""
    path = sqlite_path(url)
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
            store.value(f"{shown_url(url)}#{column}", value)
