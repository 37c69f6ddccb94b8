"""Keyed evidence: what the log and the purge keep forever proves a removal to whoever holds
the key and confirms nothing to anyone else.

An unsalted SHA-256 of a row whose other fields are known (or of a subject id, which for
dialogue data is a person's name) lets anyone confirm a guess. Evidence is therefore an
HMAC-SHA256 under a key that lives outside the log: `$EUL_EVIDENCE_KEY`, or a key file under
the project's `state/` folder (never committed), created on first use.

A row's keyed digest is the HMAC of its SHA-256 (of the row's canonical bytes), so a log that
holds older, unkeyed SHA-256 hashes can be migrated exactly without the rows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

KEY_ENV = "EUL_EVIDENCE_KEY"
KEY_FILE = Path("state") / "evidence.key"
# Keyed values carry this prefix so a reader (and the migration) tells them from plain ones.
PREFIX = "hmac-sha256:"
_KEY_BYTES = 32


class EvidenceKeyError(RuntimeError):
    """The evidence key cannot be read or is malformed; the message says where."""


def canonical_bytes(obj: Any) -> bytes:
    """One stable encoding of a JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def row_sha256(line: str) -> str:
    """SHA-256 of the canonical bytes of one stored row (a JSON object on one line)."""
    return hashlib.sha256(canonical_bytes(json.loads(line))).hexdigest()


def _parse_key(text: str, where: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = text.encode("utf-8")
    if len(key) < 16:
        raise EvidenceKeyError(f"the evidence key in {where} is shorter than 16 bytes")
    return key


def key_path(root: str | Path) -> Path:
    return Path(root) / KEY_FILE


def evidence_key(root: str | Path, create: bool = True) -> bytes:
    """The project's evidence key: `$EUL_EVIDENCE_KEY` (hex, or any text of 16+ bytes), else
    `state/evidence.key` under `root`, created (mode 0600) when missing and `create`."""
    if os.environ.get(KEY_ENV):
        return _parse_key(os.environ[KEY_ENV], f"${KEY_ENV}")
    path = key_path(root)
    if path.is_file():
        return _parse_key(path.read_text(encoding="utf-8"), str(path))
    if not create:
        raise EvidenceKeyError(f"no evidence key: set ${KEY_ENV} or create {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_hex(_KEY_BYTES) + "\n")
    try:
        os.link(tmp, path)  # never replaces a key another process created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _parse_key(path.read_text(encoding="utf-8"), str(path))


def is_keyed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def keyed(key: bytes, value: str) -> str:
    """The keyed digest of `value` (a subject id, a row's SHA-256); already keyed stays."""
    if is_keyed(value):
        return value
    return PREFIX + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def keyed_row(key: bytes, line: str) -> str:
    """The keyed digest of one stored row: HMAC of its canonical SHA-256."""
    return keyed(key, row_sha256(line))


def keyed_subject(key: bytes, subject_id: str | None) -> str | None:
    return None if subject_id is None else keyed(key, subject_id)
