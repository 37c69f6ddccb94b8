"""Hostile input for the deletion log and `eul requests submit --file`, and what handling it
means: every bad id and malformed file is either refused with one line that does not repeat
the bad value in full (an id may be personal data), leaving the log as it was, or accepted
as what it is, with every file name derived from an id a single safe path component.

Shared by the fast tests (tests/stores/test_hostile_ids.py, tests/cli/test_hostile_files.py)
and the reliability table (`benchmarks.reliability`), so both try the same inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ids a caller may send as request or subject ids. None of these is well formed.
HOSTILE_IDS: dict[str, Any] = {
    "newline inside": "req-1\nreq-2",
    "trailing newline": "req-1\n",
    "carriage return": "req\r1",
    "tab": "req\t1",
    "path traversal": "../../etc/passwd",
    "absolute path": "/etc/passwd",
    "backslash path": "a\\..\\b",
    "dot-dot": "..",
    "percent-encoded slash": "a%2Fb",
    "SQL": "'; DROP TABLE ledger_entries; --",
    "SQL quote": "s1' OR '1'='1",
    "10 kB": "a" * 10_240,
    "129 characters": "a" * 129,
    "space": "has space",
    "homoglyph (Cyrillic e)": "r\u0435q-1",
    "fullwidth letters": "\uff52\uff45\uff51",
    "right-to-left override": "req\u202e1-gpj",
    "zero-width space": "req\u200b1",
    "NUL": "req\x001",
    "emoji": "req-\U0001f600",
    "not text (int)": 12345,
    "not text (list)": ["s1"],
}

# Ids the pattern accepts although they hold path separators and dots: they
# must be stored as given and turned into file names that stay one component.
ODD_VALID_IDS = ("a/../../b", "a..", "a/b", "a/.", "a.b", "A:b@c+d", "x" * 128)

# Two ids that differ in case only: distinct requests, with distinct file names.
CASE_PAIR = ("Req-Case", "req-case")


@dataclass(frozen=True)
class RequestFile:
    """A request file and what must come of it: refused (None) or that many requests."""

    content: Callable[[], bytes]
    accepted: int | None = None
    slow: bool = False


def _lines(*lines: str) -> Callable[[], bytes]:
    return lambda: "".join(line + "\n" for line in lines).encode()


MALFORMED_FILES: dict[str, RequestFile] = {
    "bad JSON": RequestFile(_lines('{"subject_id": "s1",')),
    "JSON with trailing garbage": RequestFile(_lines('{"subject_id": "s1"} x')),
    "subject id a number": RequestFile(_lines('{"subject_id": 5}')),
    "subject id an object": RequestFile(_lines('{"subject_id": {"$ne": null}}')),
    "record ids a number": RequestFile(_lines('{"record_ids": 5}')),
    "record ids of numbers": RequestFile(_lines('{"record_ids": [1, 2]}')),
    "deadline a word": RequestFile(_lines('{"subject_id": "s1", "deadline_days": "soon"}')),
    "deadline true": RequestFile(_lines('{"subject_id": "s1", "deadline_days": true}')),
    "deadline negative": RequestFile(_lines('{"subject_id": "s1", "deadline_days": -5}')),
    "deadline 10^20 days": RequestFile(
        _lines('{"subject_id": "s1", "deadline_days": 100000000000000000000}')
    ),
    "deadline 1e308": RequestFile(_lines('{"subject_id": "s1", "deadline_days": 1e308}')),
    "unknown field": RequestFile(_lines('{"subject_id": "s1", "admin": true}')),
    "good line then a bad one": RequestFile(_lines("subject:s1", '{"subject_id": "s 2"}')),
    "JSON nested 10^5 deep": RequestFile(
        lambda: ('{"subject_id": ' + "[" * 100_000 + "]" * 100_000 + "}\n").encode()
    ),
    "a JSON list of 10^5 requests": RequestFile(
        lambda: (json.dumps([{"subject_id": f"s{i}"} for i in range(100_000)]) + "\n").encode()
    ),
    "binary": RequestFile(lambda: bytes(range(256)) * 8),
    "NUL in a line": RequestFile(lambda: b"subject:s1\x00\n"),
    "UTF-16": RequestFile(lambda: "subject:s1\n".encode("utf-16")),
    "empty": RequestFile(lambda: b""),
    "comments only": RequestFile(_lines("# nothing", "   ")),
    "a 1 MB line": RequestFile(lambda: b"subject:" + b"a" * 1_000_000 + b"\n"),
    "hostile subject (SQL)": RequestFile(_lines("subject:'; DROP TABLE ledger_entries; --")),
    "hostile request id (path)": RequestFile(
        _lines('{"subject_id": "s1", "request_id": "../../x"}')
    ),
    # accepted: well-formed however odd
    "CRLF line ends": RequestFile(lambda: b"subject:s1\r\nsubject:s2\r\n", accepted=2),
    "10^5 record ids in one request": RequestFile(
        lambda: (json.dumps({"record_ids": [f"r{i}" for i in range(100_000)]}) + "\n").encode(),
        accepted=1,
    ),
    "10^5 requests, one a line": RequestFile(
        lambda: "".join(f"subject:s{i}\n" for i in range(100_000)).encode(),
        accepted=100_000,
        slow=True,
    ),
}


@dataclass(frozen=True)
class Handled:
    """How one hostile input went: `handled` is the verdict, `note` says why not."""

    name: str
    kind: str
    handled: bool
    note: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"input": self.name, "kind": self.kind, "handled": self.handled,
                "note": self.note, "seconds": round(self.seconds, 3)}  # fmt: skip


def _echoes(message: str, value: Any) -> bool:
    """Whether `message` repeats a bad value (of more than 8 characters) in full."""
    if not isinstance(value, str) or len(value) <= 8:
        return False
    return value in message or repr(value)[1:-1] in message


def safe_names(request_id: str) -> bool:
    """The layer folder and forget file of a well-formed id are one path component each."""
    from eul.pipeline.files import layer_key
    from eul.stores.dvc.partition import forget_filename

    names = (layer_key(request_id), forget_filename(request_id))
    return all(
        name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name
        for name in names
    )


def _row_count(url: str, project: Path | None = None) -> int:
    """The log's requests, once it verifies (with the key of `project`, the folder whose
    commands wrote it, else a fixed one)."""
    from eul.stores.log.store import Ledger

    where = {"params_path": project / "params.yaml"} if project else {
        "params_path": os.devnull + ".absent", "evidence_key": b"k" * 32}  # fmt: skip
    with Ledger(url, **where) as ledger:
        assert ledger.verify().ok
        return len(ledger.list())


def try_id(name: str, value: Any, folder: Path) -> Handled:
    """Submit `value` as a subject id and as a request id; both must be refused in one line
    that does not echo it, the log left empty and verifying."""
    from eul.stores.log.schema import LedgerError
    from eul.stores.log.store import Ledger

    url = f"sqlite:///{folder / 'hostile-ids.sqlite'}"
    started = time.perf_counter()
    problems = []
    with Ledger(url, params_path=os.devnull + ".absent", evidence_key=b"k" * 32) as ledger:
        for field, spec in (("subject id", {"subject_id": value}),
                            ("request id", {"subject_id": "s1", "request_id": value})):  # fmt: skip
            try:
                ledger.submit(**spec)
                problems.append(f"{field} accepted")
            except LedgerError as err:
                message = str(err)
                if "\n" in message or _echoes(message, value):
                    problems.append(f"{field} error echoes the value or spans lines")
            except Exception as err:  # noqa: BLE001 - anything else is not handled
                problems.append(f"{field}: {type(err).__name__}")
        try:
            ledger.get(value)
            problems.append("get found it")
        except LedgerError as err:
            if _echoes(str(err), value):
                problems.append("get echoes the value")
        except Exception as err:  # noqa: BLE001
            problems.append(f"get: {type(err).__name__}")
    if _row_count(url):
        problems.append("the log holds a request")
    return Handled(name, "id", not problems, "; ".join(problems), time.perf_counter() - started)


def try_valid_ids(folder: Path) -> list[Handled]:
    """Odd but well-formed ids: stored as given, and every file name derived from them one
    safe component. A second id differing from a first in case only is refused (both would
    share one forget file and one layer folder on a case-insensitive file system), naming
    both, with the first kept."""
    from eul.stores.log.schema import LedgerError
    from eul.stores.log.store import Ledger

    url = f"sqlite:///{folder / 'odd-ids.sqlite'}"
    found = []
    with Ledger(url, params_path=os.devnull + ".absent", evidence_key=b"k" * 32) as ledger:
        for value in (*ODD_VALID_IDS, CASE_PAIR[0]):
            started = time.perf_counter()
            ledger.submit(subject_id="s1", request_id=value)
            stored = ledger.get(value).state.request_id == value
            ok = stored and safe_names(value)
            found.append(Handled(f"valid id {value[:12]!r}", "id", ok,
                                 "" if ok else "not stored as given or unsafe file name",
                                 time.perf_counter() - started))  # fmt: skip
        started = time.perf_counter()
        try:
            ledger.submit(subject_id="s1", request_id=CASE_PAIR[1])
            refused = False
        except LedgerError as err:
            refused = "only in case" in str(err)
        ids = {s.request_id for s in ledger.list()}
        assert ledger.verify().ok
    kept = CASE_PAIR[0] in ids and CASE_PAIR[1] not in ids
    ok = refused and kept
    found.append(Handled("ids differing in case only", "id", ok,
                         "" if ok else "the second id was not refused",
                         time.perf_counter() - started))  # fmt: skip
    return found


def submit_file(path: Path, log_url: str) -> tuple[int | str, str]:
    """`eul requests submit --file PATH`, in process: (exit status or the exception's type,
    stderr)."""
    from eul.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv = ["requests", "submit", "--file", str(path), "--log-url", log_url]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code: int | str = main(argv)
    except SystemExit as stop:
        code = f"SystemExit {stop.code}"
    except BaseException as raised:  # noqa: BLE001 - an escaped exception is the finding
        code = type(raised).__name__
    return code, err.getvalue()


def try_file(name: str, spec: RequestFile, folder: Path) -> Handled:
    """One request file: refused in one line naming no bad value in full and writing
    nothing, or accepted with exactly the requests it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "requests.txt"
    content = spec.content()
    path.write_bytes(content)
    url = f"sqlite:///{folder / 'log.sqlite'}"
    started = time.perf_counter()
    here = Path.cwd()
    os.chdir(folder)  # the command reads params.yaml (and the log's key) from here
    try:
        code, err = submit_file(path, url)
    finally:
        os.chdir(here)
    seconds = time.perf_counter() - started
    rows = _row_count(url, folder)
    problems = []
    if spec.accepted is None:
        if code != 2:
            problems.append(f"exit {code}, not 2")
        lines = err.strip().splitlines()
        if len(lines) != 1 or not err.startswith("eul: error: "):
            problems.append("not one error line")
        longest = max(content.split(b"\n"), key=len).decode("utf-8", "replace")
        if len(longest) > 200 and longest[:200] in err:
            problems.append("the error repeats the input")
        if rows:
            problems.append(f"{rows} requests written")
    elif code != 0 or rows != spec.accepted:
        problems.append(f"exit {code}, {rows} requests, not {spec.accepted}")
    path.unlink()
    return Handled(name, "request file", not problems, "; ".join(problems), seconds)


def try_all(folder: Path, slow: bool = False) -> list[Handled]:
    """Every hostile id and request file (the slow files only with `slow`), each in a
    fresh log under `folder`."""
    found = []
    for i, (name, value) in enumerate(HOSTILE_IDS.items()):
        sub = folder / f"id-{i}"
        sub.mkdir(parents=True, exist_ok=True)
        found.append(try_id(name, value, sub))
    (folder / "valid").mkdir(parents=True, exist_ok=True)
    found += try_valid_ids(folder / "valid")
    for i, (name, spec) in enumerate(MALFORMED_FILES.items()):
        if spec.slow and not slow:
            continue
        found.append(try_file(name, spec, folder / f"file-{i}"))
    return found
