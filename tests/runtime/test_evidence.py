"""Keyed evidence: one key per project, digests that need it, rows keyed via their SHA-256."""

import hashlib
import hmac
import os
import stat

import pytest

from eul.runtime import evidence
from eul.runtime.evidence import EvidenceKeyError, evidence_key, keyed, keyed_row, row_sha256


def test_key_file_is_created_once_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(evidence.KEY_ENV, raising=False)
    first = evidence_key(tmp_path)
    path = tmp_path / evidence.KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert evidence_key(tmp_path) == first and len(first) == 32
    assert evidence_key(tmp_path / "other") != first


def test_environment_key_wins_and_short_keys_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(evidence.KEY_ENV, "ab" * 16)
    assert evidence_key(tmp_path) == bytes.fromhex("ab" * 16)
    assert not (tmp_path / evidence.KEY_FILE).exists()
    monkeypatch.setenv(evidence.KEY_ENV, "short")
    with pytest.raises(EvidenceKeyError, match="shorter than 16"):
        evidence_key(tmp_path)
    monkeypatch.delenv(evidence.KEY_ENV)
    with pytest.raises(EvidenceKeyError, match="no evidence key"):
        evidence_key(tmp_path, create=False)


def test_keyed_digests_depend_on_the_key_and_are_idempotent():
    k1, k2 = b"k" * 32, b"j" * 32
    assert keyed(k1, "alice") != keyed(k2, "alice")
    assert keyed(k1, keyed(k1, "alice")) == keyed(k1, "alice")
    line = '{"text": "é", "id": 1}'
    sha = hashlib.sha256('{"id":1,"text":"é"}'.encode()).hexdigest()
    assert row_sha256(line) == sha
    expected = hmac.new(k1, sha.encode(), hashlib.sha256).hexdigest()
    assert keyed_row(k1, line) == evidence.PREFIX + expected
    assert keyed_row(k1, '{"id":1,  "text":"é"}') == keyed_row(k1, line)
