"""Anchors: the deletion log's head (seq, hash) recorded outside its database, so that a log
cut short or rewritten after an anchor shows.

`verify()` catches an entry edited, removed from the middle or reordered, and a head row or
state row that disagrees with the entries. It cannot catch someone who deletes the last
entries and resets the head and state rows to match, nor one who re-hashes the whole chain:
both leave a chain that checks out. Each anchor says "the log had this hash at entry N";
`check_anchors` then requires entry N to exist with that hash.

Anchors come from three stores, each out of the log's database:

- every registered model version (its `log_seq` and `log_hash` tags: the head its batch was
  cut at);
- the anchors file (`log.anchors`, state/log-anchors.jsonl), one line per batch report,
  written after the purge and erase steps' marks, so that a request's last entry is covered
  even when no version is registered after it;
- each DVC remote the purge sweeps (`pipeline.remotes`, default all), an object per anchor
  under `eul-anchors/`, named by seq and hash prefix and never overwritten.

An anchor holds the seq, the hash, the time and the batch id: no request id, no subject.
Someone able to rewrite the log and every one of these stores is not detected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from eul.stores.log.schema import Entry, iso, utcnow

if TYPE_CHECKING:
    from eul.pipeline.context import Context

ANCHOR_FOLDER = "eul-anchors"
FILE_SOURCE = "anchors file"
_HASH_LENGTH = 64


class _Log(Protocol):
    """What the check reads of the log (`eul.stores.log.store.Ledger`)."""

    def head(self) -> tuple[int, str]: ...

    def entry_at(self, seq: int) -> Entry | None: ...


@dataclass(frozen=True)
class Anchor:
    """The log's head as one store recorded it; `source` says which store."""

    seq: int
    hash: str
    at: str = ""
    batch: str = ""
    source: str = ""

    def record(self) -> dict[str, Any]:
        """What is written: seq, hash, time and batch id only."""
        return {"log_seq": self.seq, "log_hash": self.hash, "at": self.at, "batch": self.batch}

    @property
    def object_name(self) -> str:
        """Its object on a remote: sorted by seq; the hash keeps a rewritten head's anchor
        from replacing the first one."""
        return f"{ANCHOR_FOLDER}/{self.seq:012d}-{self.hash[:16]}.json"


@dataclass(frozen=True)
class Finding:
    """Something the integrity checks found wrong (kind: anchor, deployment or store)."""

    kind: str
    message: str
    source: str = ""
    seq: int | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}


def parse_anchor(value: Any, source: str) -> Anchor:
    """An anchor from a written record; ValueError when it is not one."""
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    seq, digest = value.get("log_seq"), value.get("log_hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError("log_seq is not a whole number >= 0")
    if not isinstance(digest, str) or len(digest) != _HASH_LENGTH:
        raise ValueError("log_hash is not a sha256 hex digest")
    return Anchor(seq, digest, str(value.get("at") or ""), str(value.get("batch") or ""), source)


def head_anchor(log: _Log, batch: str) -> Anchor:
    """The log's head now, as an anchor of `batch`."""
    seq, digest = log.head()
    return Anchor(seq, digest, iso(utcnow()), batch)


# -- checking -----------------------------------------------------------------------------


def check_anchors(log: _Log, anchors: Iterable[Anchor]) -> list[Finding]:
    """One finding per anchor the log contradicts: its entry is gone (the head is below it)
    or holds another hash. The message names the highest seq some anchor still confirms:
    the log is known good up to there."""
    head_seq, _ = log.head()
    checked: list[tuple[Anchor, Entry | None]] = []
    entries: dict[int, Entry | None] = {}
    for anchor in sorted(anchors, key=lambda a: (a.seq, a.source)):
        if anchor.seq <= 0:
            continue  # an empty log: nothing to contradict
        if anchor.seq not in entries:
            entries[anchor.seq] = log.entry_at(anchor.seq) if anchor.seq <= head_seq else None
        checked.append((anchor, entries[anchor.seq]))
    confirmed = [a.seq for a, e in checked if e is not None and e.hash == a.hash]
    findings = []
    for anchor, entry in checked:
        if entry is not None and entry.hash == anchor.hash:
            continue
        good = max((s for s in confirmed if s < anchor.seq), default=0)
        if entry is None:
            what = f"the log ends at entry {head_seq}"
        else:
            what = f"the log's entry {anchor.seq} has hash {entry.hash[:12]}"
        findings.append(
            Finding(
                "anchor",
                f"{anchor.source or 'an anchor'} recorded entry {anchor.seq} with hash "
                f"{anchor.hash[:12]}, but {what}: the log was truncated or rewritten after "
                f"seq {good}",
                source=anchor.source,
                seq=anchor.seq,
            )
        )
    return findings


# -- the stores ---------------------------------------------------------------------------


def version_anchors(
    versions: Mapping[int, Mapping[str, str]],
) -> tuple[list[Anchor], list[Finding]]:
    """The anchors registered versions record (tags `log_seq`, `log_hash`), from each
    version's tags; a version without them records none."""
    anchors, findings = [], []
    for version, tags in sorted(versions.items()):
        if "log_seq" not in tags and "log_hash" not in tags:
            continue
        source = f"version {version}"
        try:
            seq = int(tags.get("log_seq", ""))
            anchors.append(parse_anchor({"log_seq": seq, "log_hash": tags.get("log_hash")}, source))
        except ValueError as err:
            findings.append(
                Finding("anchor", f"{source}: its log tags are unreadable ({err})", source=source)
            )
    return anchors, findings


def append_anchor_file(path: str | Path, anchor: Anchor) -> bool:
    """Append the anchor as one JSON line, unless the last line already records this head;
    returns whether it wrote. The file is only ever appended to."""
    path = Path(path)
    raw = path.read_bytes() if path.is_file() else b""
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if lines:
        try:
            last = parse_anchor(json.loads(lines[-1]), FILE_SOURCE)
            if (last.seq, last.hash) == (anchor.seq, anchor.hash):
                return False
        except ValueError:
            pass  # read_anchor_file reports it
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(anchor.record(), sort_keys=True) + "\n"
    if raw and not raw.endswith(b"\n"):
        text = "\n" + text  # a torn last line stays a line of its own
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def read_anchor_file(path: str | Path) -> tuple[list[Anchor], list[Finding]]:
    """The anchors of the file (none when it is absent); a line that is not one is a
    finding (the file was edited)."""
    path = Path(path)
    if not path.is_file():
        return [], []
    anchors, findings = [], []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            anchors.append(parse_anchor(json.loads(line), f"{FILE_SOURCE} line {number}"))
        except ValueError as err:
            findings.append(
                Finding(
                    "anchor",
                    f"{path.name} line {number} is not a head record ({err})",
                    source=FILE_SOURCE,
                )
            )
    return anchors, findings


def write_remote_anchor(root: str | Path, remote: str, anchor: Anchor) -> bool:
    """Put the anchor on a DVC remote (`eul-anchors/<seq>-<hash>.json`), unless it is there;
    returns whether it wrote. DvcError when the remote cannot be written."""
    from eul.stores.dvc import dvcstore

    data = (json.dumps(anchor.record(), sort_keys=True) + "\n").encode("utf-8")
    return dvcstore.write_remote_file(root, remote, anchor.object_name, data)


def read_remote_anchors(root: str | Path, remote: str) -> tuple[list[Anchor], list[Finding]]:
    """The anchors on a DVC remote; an object that is not one, or whose name does not match
    what it holds, is a finding. DvcError when the remote cannot be read."""
    from eul.stores.dvc import dvcstore

    source = f"remote {remote}"
    anchors, findings = [], []
    for name, data in dvcstore.read_remote_files(root, remote, ANCHOR_FOLDER).items():
        where = f"{source}: {ANCHOR_FOLDER}/{name}"
        try:
            anchor = parse_anchor(json.loads(data), source)
        except ValueError as err:
            findings.append(
                Finding("anchor", f"{where} is not a head record ({err})", source=source)
            )
            continue
        if f"{ANCHOR_FOLDER}/{name}" != anchor.object_name:
            findings.append(
                Finding(
                    "anchor",
                    f"{where} does not match the head it records",
                    source=source,
                    seq=anchor.seq,
                )
            )
        anchors.append(anchor)
    return anchors, findings


# -- a project's stores -------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorStores:
    """Where a project's anchors go: the file, and the DVC remotes of the project at `root`."""

    file: Path
    root: Path
    remotes: tuple[str, ...]

    @classmethod
    def of(cls, ctx: Context) -> AnchorStores:
        """The project's anchors file (`log.anchors`) and the remotes the purge sweeps
        (`pipeline.remotes`, else every configured one; none outside a DVC project)."""
        from eul.stores.dvc import dvcstore

        remotes: Sequence[str] = ()
        if (ctx.root / ".dvc").is_dir():
            configured = ctx.params.pipeline.remotes
            remotes = configured if configured is not None else sorted(dvcstore.remotes(ctx.root))
        return cls(ctx.root / ctx.params.log.anchors, ctx.root, tuple(remotes))

    def write(self, anchor: Anchor) -> dict[str, Any]:
        """Record the anchor in the file and on every remote; the record and where it went.
        DvcError when a remote cannot be written (the report then fails and its rerun
        writes it)."""
        written = {FILE_SOURCE: append_anchor_file(self.file, anchor)}
        for remote in self.remotes:
            written[f"remote {remote}"] = write_remote_anchor(self.root, remote, anchor)
        return {**anchor.record(), "stores": sorted(written), "written": written}

    def read(self) -> tuple[list[Anchor], list[Finding]]:
        """Every anchor of the file and the remotes; a remote that cannot be read is a
        finding (its anchors go unchecked)."""
        from eul.stores.dvc.dvcstore import DvcError

        anchors, findings = read_anchor_file(self.file)
        for remote in self.remotes:
            try:
                found, problems = read_remote_anchors(self.root, remote)
            except DvcError as err:
                findings.append(Finding("store", str(err), source=f"remote {remote}"))
                continue
            anchors += found
            findings += problems
        return anchors, findings


def write_anchor(ctx: Context, log: _Log, batch: str) -> dict[str, Any]:
    """Anchor the log's head now in the project's file and remotes (the batch report does,
    after the purge's marks); an empty log is not anchored."""
    anchor = head_anchor(log, batch)
    if anchor.seq <= 0:
        return {**anchor.record(), "stores": [], "written": {}}
    return AnchorStores.of(ctx).write(anchor)


def read_anchors(
    ctx: Context, versions: Mapping[int, Mapping[str, str]]
) -> tuple[list[Anchor], list[Finding]]:
    """Every anchor of the project: the registered versions' (`versions`: each version's
    tags), the anchors file's and the remotes'."""
    anchors, findings = version_anchors(versions)
    stored, problems = AnchorStores.of(ctx).read()
    return anchors + stored, findings + problems
