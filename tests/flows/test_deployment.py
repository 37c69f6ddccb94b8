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
from mlflow_server import running_mlflow_server
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


@pytest.fixture
def mlflow_url(tmp_path, monkeypatch):
    """A real `mlflow server` (SQLite backend) that the flow and this test both use."""
    root = tmp_path / "mlflow"
    with running_mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url


def test_nightly_deployment_runs_on_a_local_server(
    tmp_path, flow_template, prefect_server, mlflow_url
):
    # given the project with two validated-to-be requests, prefect.yaml deployed on a pool,
    # and its registry on a real `mlflow server`
    project = tmp_path / "project"
    shutil.copytree(flow_template, project, symlinks=True)
    train = (project / "data/prepared/train.jsonl").read_text().splitlines()
    subjects = sorted({json.loads(line)["subject_id"] for line in train})[:2]
    with Ledger(
        f"sqlite:///{project / 'state/deletion-log.sqlite'}", params_path=project / "params.yaml"
    ) as ledger:
        for i, subject in enumerate(subjects):
            ledger.submit(subject_id=subject, request_id=f"dep-{i}")
    env = {**prefect_server, "EUL_PROJECT_DIR": str(project), "MLFLOW_TRACKING_URI": mlflow_url}
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
    # named after its batch and tagged with it and with production before and after
    batch_tags = [t for t in inspected["tags"] if t.startswith("batch:")]
    assert len(batch_tags) == 1 and inspected["name"] == f"nightly-{batch_tags[0][6:]}"
    assert {"production-before:base", "production-after:v1"} <= set(inspected["tags"])
    # and its report hangs off the flow run itself, read back through the REST API
    import httpx

    found = httpx.post(
        f"{env['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
        timeout=30,
    ).json()
    by_key = {a["key"]: a for a in found}
    report = by_key["nightly-deletion-batch-report"]
    assert report["flow_run_id"] == flow_run_id and report["task_run_id"] is None
    assert "Production before: the base model" in report["data"]
    assert "Production after: version 1" in report["data"] and "None" not in report["data"]
    assert "## Where to look" in report["data"] and "MLflow version" in report["data"]
    assert "nightly-deletion-batch-requests" in by_key
    assert f"{mlflow_url}/#/models/eul-model/versions/1" in report["data"]
    # the version page, read back through MLflow's REST API: each request before -> after,
    # every gate with its band, short tags, and links to the run and the flow run
    version = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/model-versions/get",
        params={"name": "eul-model", "version": "1"},
        timeout=30,
    ).json()["model_version"]
    description = version["description"]
    assert "| dep-0 |" in description and "| dep-1 |" in description and " -> " in description
    for gate in ("utility", "mia_auc", "forget_vs_test", "forget_acc"):
        assert f"| {gate} |" in description
    assert "band " in description and "none: the base model" in description
    assert f"{mlflow_url}/#/experiments/" in description
    assert f"/flow-runs/flow-run/{flow_run_id}" in description
    tags = {t["key"]: t["value"] for t in version["tags"]}
    shown = {k: v for k, v in tags.items() if k.startswith(("eul.gate.", "eul.metric."))}
    assert len(shown) >= 6 and all(len(v) <= 250 for v in shown.values())
    assert "gates" not in tags and "gates_json" in tags
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
