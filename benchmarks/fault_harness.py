"""The fault harness: a tiny project, the nightly batch run as a subprocess (`python -m flows
nightly`) that a fault can kill, and the invariants every request and store must hold after
a fault and after the rerun that finishes the batch.

Kills: at a drill point ($EUL_DRILL_KILL names it: the process SIGKILLs itself there), after
a number of seconds, or once a file appears in the project (a layer's `.tmp` folder: mid
training; a batch's `fused.tmp`: mid fusion). An outside kill sends SIGKILL to the batch's
whole process group, as a lost machine would end it and every `dvc` child it runs.

Invariants (`check`): every request in exactly one state whose history is the lifecycle in
order, each status once; the log verifies; production, if any, passed its gates (or was
overridden by a reviewer), covers every request the log calls deployed, and holds in its
fusion state every covered request it claims to have fused; each batch registered one
version, each request one MLflow run; every purged request's evidence has one keyed digest
per row removed, and the raw data none of its rows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eul.runtime.environment import tool_variables
from eul.runtime.servers import free_port, start_prefect_server, stop

REPO = Path(__file__).resolve().parents[1]
LIFECYCLE = ("received", "validated", "unlearned", "fused", "deployed", "purged", "erased")
DONE = ("purged", "erased")
# The tiny project of tests/conftest.py (FLOW_PARAMS): `dvc repro` and a batch in seconds,
# every gate passable.
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "data": {"n_subjects": 30, "records_per_subject": [3, 6], "memorised_share": 0.04},
    "model": {"vocab_size": 300, "d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32},
    "train": {"epochs": 2, "batch_size": 32},
    "unlearn": {"epochs": 2, "retained_sample": 64, "retained_per_epoch": 32},
    "gates": {"max_test_acc_drop": 1.0, "max_mia_auc": 1.0, "forget_acc_margin": 1.0},
    "pipeline": {"eval_retained": 50, "train_workers": 2},
}
# Variables that would point a batch at other stores or stop it on purpose.
CLEARED = (
    "EUL_LOG_URL",
    "MLFLOW_TRACKING_URI",
    "EUL_MLFLOW_ARTIFACTS",
    "EUL_MLFLOW_MODEL",
    "EUL_MLFLOW_EXPERIMENT",
    "MLFLOW_S3_ENDPOINT_URL",
    "EUL_DRILL_KILL",
)


def base_env() -> dict[str, str]:
    """What every subprocess gets: this checkout's tools, quiet and offline, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(tool_variables(REPO))
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    return env


def set_params(root: Path, **sections: dict[str, Any]) -> None:
    import yaml

    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def build_project(dest: Path, **params: dict[str, Any]) -> Path:
    """A git + DVC project holding this checkout's eul/, tasks/, flows/, dvc.yaml, with the
    tiny params (and `params` over them), every stage run and MLflow's schema created (as
    tests/conftest.py's)."""
    import mlflow

    from eul.stores.dvc import dvcstore

    env = base_env()
    dest.mkdir(parents=True)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "faults@localhost"],
                ["git", "config", "user.name", "faults"]):  # fmt: skip
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        dvcstore.init_project(dest)
        for name in ("eul", "tasks", "flows"):
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("dvc.yaml", "prefect.yaml", ".gitignore", "params.yaml"):
            shutil.copy(REPO / name, dest / name)
        set_params(dest, **TINY_PARAMS)
        if params:
            set_params(dest, **params)
        subprocess.run([sys.executable, "-m", "eul.cli.main", "--quiet", "data", "init"],
                       cwd=dest, check=True, capture_output=True, env=env)  # fmt: skip
        dvcstore.add(dest, "data/raw", "data.dvc")
        dvcstore.run_dvc(["repro"], dest)
        (dest / "state").mkdir(exist_ok=True)
        mlflow.MlflowClient(f"sqlite:///{dest / 'state/mlflow.db'}").search_experiments()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "project"], cwd=dest, check=True, env=env)
    return dest


def copy_project(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A Prefect server of its own on loopback (SQLite in `home`); yields its API URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (home / "server.log").open("w") as log:
        server = start_prefect_server({**base_env(), "PREFECT_HOME": str(home)}, log, port, 120)
        try:
            yield f"http://127.0.0.1:{port}/api"
        finally:
            stop(server)


# -- requests -------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_subjects(root: Path) -> list[str]:
    """Subjects of the training split, most rows first (ties by id)."""
    counts: dict[str, int] = {}
    for row in _rows(root / "data/prepared/train.jsonl"):
        counts[row["subject_id"]] = counts.get(row["subject_id"], 0) + 1
    return sorted(counts, key=lambda s: (-counts[s], s))


def raw_rows(root: Path) -> dict[str, int]:
    """Rows per subject in the raw data."""
    counts: dict[str, int] = {}
    for row in _rows(root / "data/raw/records.jsonl"):
        counts[row["subject_id"]] = counts.get(row["subject_id"], 0) + 1
    return counts


@dataclass
class Submitted:
    """The requests a scenario submitted: request id -> subject, and the subjects' raw rows."""

    subjects: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def submit(root: Path, requests: Mapping[str, str], into: Submitted | None = None) -> Submitted:
    """Submit one subject request per id (`requests`: request id -> subject)."""
    from eul.stores.log.store import Ledger

    into = into or Submitted()
    rows = raw_rows(root)
    url = f"sqlite:///{root / 'state/deletion-log.sqlite'}"
    with Ledger(url, params_path=root / "params.yaml") as ledger:
        for request_id, subject in requests.items():
            ledger.submit(subject_id=subject, request_id=request_id)
            into.subjects[request_id] = subject
            into.rows[request_id] = rows.get(subject, 0)
    return into


# -- running a batch ------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """Where a fault ends the batch: at a drill `point`, `after_s` seconds in, or once a file
    matching `when` (a glob under the project) appears, then `delay_s` later."""

    point: str | None = None
    after_s: float | None = None
    when: str | None = None
    delay_s: float = 0.0

    def describe(self) -> str:
        if self.point:
            return f"SIGKILL at drill point {self.point}"
        if self.when:
            return f"SIGKILL {self.delay_s:g} s after {self.when} appears"
        return f"SIGKILL after {self.after_s:.1f} s"


@dataclass(frozen=True)
class BatchRun:
    """One `python -m flows nightly`: its exit status, its last line, whether a kill ended
    it (and when), and its wall time."""

    returncode: int
    result: dict[str, Any] | None
    killed: bool
    seconds: float
    tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and isinstance(self.result, dict) and "error" not in self.result


def run_batch(
    root: Path,
    env: Mapping[str, str],
    kill: Kill | None = None,
    timeout_s: float = 900,
    during: Any = None,
    flow: str = "nightly",
    args: tuple[str, ...] = (),
    command: list[str] | None = None,
) -> BatchRun:
    """The batch on `root` in a subprocess of its own process group. `during(proc)`, if
    given, runs once the process has started (a fault of another store, in a thread of its
    own or inline)."""
    cmd = command or [sys.executable, "-m", "flows", flow, "--project-dir", str(root), *args]
    run_env = dict(env)
    if kill is not None and kill.point:
        run_env["EUL_DRILL_KILL"] = kill.point
    log = root.parent / f"batch-{time.time_ns()}.log"
    started = time.monotonic()
    killed = False
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=run_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            if during is not None:
                during(proc)
            while proc.poll() is None:
                spent = time.monotonic() - started
                if spent > timeout_s:
                    _kill_group(proc)
                    raise TimeoutError(f"the batch ran past {timeout_s} s; see {log}")
                if kill is not None and _due(kill, root, spent):
                    time.sleep(kill.delay_s)
                    killed = _kill_group(proc)
                    break
                time.sleep(0.005 if kill is not None and kill.when else 0.02)
            proc.wait()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
    text = log.read_text(errors="replace")
    tail = text[-4000:]
    result = None
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            break
    killed = killed or proc.returncode == -signal.SIGKILL
    return BatchRun(proc.returncode, result, killed, time.monotonic() - started, tail)


def _due(kill: Kill, root: Path, spent: float) -> bool:
    if kill.after_s is not None:
        return spent >= kill.after_s
    if kill.when is not None:
        return any(root.glob(kill.when))
    return False


def _kill_group(proc: subprocess.Popen) -> bool:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    proc.wait()
    return True


def run_to_completion(
    root: Path, env: Mapping[str, str], limit: int = 3
) -> tuple[list[BatchRun], bool]:
    """Rerun the batch, fault-free, until one run finishes (at most `limit` runs)."""
    runs = []
    for _ in range(limit):
        run = run_batch(root, env)
        runs.append(run)
        if run.ok:
            return runs, True
    return runs, False


# -- the invariants -------------------------------------------------------------------------


@dataclass
class Check:
    """What `check` found: problems (empty: every invariant holds) and the counts."""

    problems: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    duplicated: list[str] = field(default_factory=list)
    versions: int = 0
    production: int | None = None
    unfinished_runs: int = 0
    superseded_runs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# What the checks read the stores with: the batch's MLflow and S3 settings.
STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "EUL_MLFLOW_ARTIFACTS",
                   "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")  # fmt: skip


def check(root: Path, env: Mapping[str, str], submitted: Submitted, finished: bool = True) -> Check:
    """Every invariant of the module docstring. With `finished`, every submitted request
    must also have reached `purged`; without, any state on the way is allowed (a check
    between a kill and its rerun)."""
    from eul.pipeline.context import load_context
    from eul.runtime.environment import environment

    found = Check()
    with environment({k: env[k] for k in STORE_VARIABLES if k in env}):
        _check_log(root, submitted, finished, found)
        _check_registry(root, load_context(root).settings, found)
        _check_purge(root, submitted, found)
    return found


def _check_log(root: Path, submitted: Submitted, finished: bool, found: Check) -> None:
    import sqlite3

    from eul.stores.log.store import Ledger

    db = root / "state/deletion-log.sqlite"
    with Ledger(f"sqlite:///{db}", params_path=root / "params.yaml") as ledger:
        report = ledger.verify()
        if not report.ok:
            found.problems.append(f"the log does not verify: {report.reason}")
        states = ledger.list()
        histories = {s.request_id: [e.status for e in ledger.get(s.request_id).history]
                     for s in states}  # fmt: skip
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT request_id, COUNT(*) FROM ledger_requests GROUP BY request_id"
        ).fetchall()
    for request_id, count in rows:
        if count != 1:
            found.problems.append(f"{request_id} has {count} state rows")
    found.statuses = {s.request_id: s.status for s in states}
    for request_id in submitted.subjects:
        history = histories.get(request_id)
        if history is None:
            found.problems.append(f"{request_id} is lost: not in the log")
            continue
        if history == ["received", "rejected"]:
            continue
        if history != list(LIFECYCLE[: len(history)]):
            found.problems.append(f"{request_id} went {' -> '.join(history)}")
            if len(set(history)) != len(history):
                found.duplicated.append(request_id)
        if finished and history[-1] not in DONE:
            found.problems.append(f"{request_id} stopped at {history[-1]}")


def _check_registry(root: Path, settings: Any, found: Check) -> None:
    from mlflow import MlflowClient

    from eul.pipeline.context import BATCH_KEY_TAG
    from eul.stores.registry.tags import covered_request_ids

    client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    found.versions = len(versions)
    keys: dict[str, list[str]] = {}
    for v in versions:
        keys.setdefault(v.tags.get(BATCH_KEY_TAG, "?"), []).append(v.version)
    for key, numbers in keys.items():
        if len(numbers) > 1:
            found.problems.append(f"batch {key[:12]} registered {len(numbers)} versions {numbers}")
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        runs = client.search_runs([experiment.experiment_id], "tags.`eul.kind` = 'request'",
                                  max_results=5000)  # fmt: skip
        per: dict[str, list[str]] = {}
        for run in runs:
            if "eul.superseded_by" in run.data.tags:
                found.superseded_runs += 1
                continue
            per.setdefault(run.data.tags.get("eul.request_id", "?"), []).append(run.info.status)
        for request_id, run_states in per.items():
            # a run a kill left unfinished is an earlier try (the purge deletes its files
            # too), and one a rebuilt layer superseded is history (tagged so); two finished
            # live runs are the request's layer trained and logged twice
            if run_states.count("FINISHED") > 1:
                found.problems.append(
                    f"{request_id} has {run_states.count('FINISHED')} finished MLflow runs"
                )
                found.duplicated.append(request_id)
            found.unfinished_runs += len(run_states) - run_states.count("FINISHED")
    alias = None
    try:
        alias = client.get_model_version_by_alias(settings.model_name, "production")
    except Exception:  # noqa: BLE001 - no such alias yet
        alias = None
    if alias is None:
        suppressed = [r for r, s in found.statuses.items() if s in ("deployed", *DONE)]
        if suppressed:
            found.problems.append(f"no production version, yet {len(suppressed)} deployed")
        return
    found.production = int(alias.version)
    tags = alias.tags
    if tags.get("gates_passed") != "true" and not tags.get("eul.override_reason"):
        found.problems.append(f"production (version {alias.version}) failed its gates")
    covered = set(covered_request_ids(tags))
    for request_id, status in found.statuses.items():
        if status in ("deployed", *DONE) and request_id not in covered:
            found.problems.append(f"{request_id} is {status} but production does not cover it")
    if tags.get("eul.kind") != "compaction":
        with tempfile.TemporaryDirectory(prefix="eul-check-") as tmp:
            local = client.download_artifacts(alias.run_id, "fusion_state", tmp)
            fused = set(json.loads((Path(local) / "fusion_state.json").read_text())["requests"])
        claimed = {r for r in covered if r in found.statuses}
        missing = sorted(claimed - fused - _rowless(root, claimed))
        if missing:
            found.problems.append(f"production covers {missing} but its fusion state lacks them")


def _rowless(root: Path, ids: set[str]) -> set[str]:
    """Requests whose `unlearned` entry says they had no training rows (no layer to fuse)."""
    from eul.stores.log.store import Ledger

    out = set()
    with Ledger(f"sqlite:///{root / 'state/deletion-log.sqlite'}") as ledger:
        for request_id in ids:
            for entry in ledger.get(request_id).history:
                if entry.status == "unlearned" and not entry.details.get("rows"):
                    out.add(request_id)
    return out


def _check_purge(root: Path, submitted: Submitted, found: Check) -> None:
    from eul.stores.log.store import Ledger

    remaining = raw_rows(root)
    with Ledger(f"sqlite:///{root / 'state/deletion-log.sqlite'}") as ledger:
        for request_id, subject in submitted.subjects.items():
            if found.statuses.get(request_id) not in DONE:
                continue
            entries = [e for e in ledger.get(request_id).history if e.status == "purged"]
            evidence = (entries[0].details.get("evidence") or {}) if entries else {}
            expected = submitted.rows.get(request_id, 0)
            digests = evidence.get("row_hmac") or []
            if evidence.get("rows_removed") != expected or len(digests) != expected:
                found.problems.append(
                    f"{request_id}: purge evidence for {evidence.get('rows_removed')} rows and "
                    f"{len(digests)} digests, the subject had {expected}"
                )
            if remaining.get(subject):
                found.problems.append(f"{request_id} is purged but the raw data holds its rows")
