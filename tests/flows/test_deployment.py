"""`prefect deployment run 'nightly-deletion-batch/nightly'` against a real local Prefect
server (`prefect server start` on 127.0.0.1): the deployment comes from prefect.yaml through
`prefect deploy`, a process worker runs it, and the outcome is read from the deletion log
and the MLflow registry the flow wrote to."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import STORE_ENV
from prefect_server import running_prefect_server

from eul.pipeline.context import load_context
from eul.runtime.servers import PREFECT
from eul.stores.log.store import Ledger
from eul.stores.registry.tags import covered_request_ids
from eul.stores.registry.versions import PRODUCTION, get_alias_version, version_tags

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy"),
]


@pytest.fixture
def prefect_server(tmp_path, tool_env, monkeypatch):
    """A Prefect server on a free loopback port with its own home (database); yields the
    environment for CLI calls against it, and stops the server by its PID."""
    for name in STORE_ENV:
        monkeypatch.delenv(name, raising=False)
    with running_prefect_server(tmp_path / "prefect-home") as env:
        yield env


def _prefect(env: dict, cwd: Path, *args: str, timeout: int = 180) -> str:
    proc = subprocess.run(
        [PREFECT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_nightly_deployment_runs_on_a_local_server(tmp_path, flow_template, prefect_server):
    # given the project with two validated-to-be requests, prefect.yaml deployed on a pool
    project = tmp_path / "project"
    shutil.copytree(flow_template, project, symlinks=True)
    train = (project / "data/prepared/train.jsonl").read_text().splitlines()
    subjects = sorted({json.loads(line)["subject_id"] for line in train})[:2]
    with Ledger(
        f"sqlite:///{project / 'state/deletion-log.sqlite'}", params_path=project / "params.yaml"
    ) as ledger:
        for i, subject in enumerate(subjects):
            ledger.submit(subject_id=subject, request_id=f"dep-{i}")
    env = {**prefect_server, "EUL_PROJECT_DIR": str(project)}
    _prefect(env, project, "work-pool", "create", "eul-process", "--type", "process")
    _prefect(env, project, "--no-prompt", "deploy", "--all")
    listed = _prefect({**env, "COLUMNS": "250"}, project, "deployment", "ls")
    for name in ("nightly-deletion-batch/nightly", "unlearn-request/urgent", "promote/review",
                 "compact/weekly"):  # fmt: skip
        assert name in listed
    # when the deployment is run and a process worker picks the run up
    out = _prefect(env, project, "deployment", "run", "nightly-deletion-batch/nightly")
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    _prefect(env, project, "worker", "start", "--pool", "eul-process", "--run-once",
             "--limit", "1", timeout=240)  # fmt: skip
    # then the flow run completed
    inspected = json.loads(_prefect(env, project, "flow-run", "inspect", flow_run_id, "-o",
                                    "json"))  # fmt: skip
    assert inspected["state"]["type"] == "COMPLETED", inspected["state"]
    # and it did the batch: both requests honoured by production version 1, rows purged
    ctx = load_context(project)
    assert get_alias_version(ctx.settings, PRODUCTION) == 1
    assert covered_request_ids(version_tags(ctx.settings, 1)) == ["dep-0", "dep-1"]
    with Ledger(ctx.log_url) as ledger:
        assert {s.request_id: s.status for s in ledger.list()} == {
            "dep-0": "purged",
            "dep-1": "purged",
        }


def test_serve_offers_the_same_four_deployments(tmp_path):
    from flows.serve import COMPACT_CRON, NIGHTLY_CRON, deployments

    found = {d.name: d for d in deployments(str(tmp_path))}
    assert sorted(found) == ["nightly", "review", "urgent", "weekly"]
    assert found["nightly"].schedules[0].schedule.cron == NIGHTLY_CRON
    assert found["weekly"].schedules[0].schedule.cron == COMPACT_CRON
    assert found["urgent"].parameters == {"project_dir": str(tmp_path.resolve())}
