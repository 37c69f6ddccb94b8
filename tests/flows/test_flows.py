"""The Prefect flows end to end on a tiny project: a real git + DVC project built by
`eul data init` and `dvc repro`, a real SQLite MLflow store inside it, and Prefect's test
harness (a temporary Prefect server for the session)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

for _name, _value in (
    ("DO_NOT_TRACK", "1"),
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60"),
):
    os.environ.setdefault(_name, _value)

from conftest import STORE_ENV, cut_last_entry, unique_text_subjects  # noqa: E402

from eul.cli.main import main  # noqa: E402
from eul.fusion.fuse import FusionState  # noqa: E402
from eul.pipeline.checks import ParameterError  # noqa: E402
from eul.pipeline.context import PipelineError, load_context  # noqa: E402
from eul.runtime.evidence import evidence_key, keyed, keyed_row  # noqa: E402
from eul.stores.log.store import Ledger  # noqa: E402
from eul.stores.registry.loading import load_production  # noqa: E402
from eul.stores.registry.tags import covered_request_ids  # noqa: E402
from eul.stores.registry.versions import (  # noqa: E402
    CANDIDATE,
    PRODUCTION,
    get_alias_version,
    version_tags,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy"),
]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def set_params(root: Path, **sections: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def project(tmp_path, flow_template, tool_env, prefect_harness, monkeypatch) -> Path:
    """A private copy of the built project; the log, MLflow and DVC all live inside it."""
    for name in STORE_ENV:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    shutil.copytree(flow_template, root, symlinks=True)
    return root


def unique_subjects(root: Path, n: int) -> list[str]:
    """Subjects in the training split whose texts appear in no other row."""
    return unique_text_subjects(_rows(root / "data/prepared/train.jsonl"))[:n]


def submit(root: Path, **requests: str) -> dict[str, list[str]]:
    """Submit one request per subject (request id -> subject); returns their row texts."""
    rows = _rows(root / "data/prepared/train.jsonl")
    with Ledger(
        f"sqlite:///{root / 'state/deletion-log.sqlite'}", params_path=root / "params.yaml"
    ) as ledger:
        for request_id, subject in requests.items():
            ledger.submit(subject_id=subject, request_id=request_id)
    return {rid: [r["text"] for r in rows if r["subject_id"] == s] for rid, s in requests.items()}


def statuses(root: Path) -> dict[str, str]:
    with Ledger(
        f"sqlite:///{root / 'state/deletion-log.sqlite'}", params_path=root / "params.yaml"
    ) as ledger:
        return {s.request_id: s.status for s in ledger.list()}


def histories(root: Path) -> dict[str, list[str]]:
    with Ledger(
        f"sqlite:///{root / 'state/deletion-log.sqlite'}", params_path=root / "params.yaml"
    ) as ledger:
        return {s.request_id: [e.status for e in ledger.get(s.request_id).history]
                for s in ledger.list()}  # fmt: skip


def ledger_history(root: Path, request_id: str) -> list:
    with Ledger(f"sqlite:///{root / 'state/deletion-log.sqlite'}") as ledger:
        return ledger.get(request_id).history


def request_runs(root: Path) -> list:
    import mlflow

    settings = load_context(root).settings
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    return client.search_runs([experiment.experiment_id], "tags.`eul.kind` = 'request'")


def audit_cli(*args: str) -> tuple[int, str]:
    """`eul audit ARGS`: exit status and output. (Not capsys: Prefect's log handler would
    keep writing to the stream capsys closes after the test.)"""
    return eul_cli("audit", *args)


def eul_cli(*args: str) -> tuple[int, str]:
    """`eul ARGS`: exit status and output (see `audit_cli`)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def holders(tops: list[Path], needle: str) -> list[Path]:
    found = []
    for top in tops:
        for path in sorted(p for p in top.rglob("*") if p.is_file()):
            if needle.encode() in path.read_bytes():
                found.append(path)
    return found


def test_nightly_batch_end_to_end(project):
    from prefect.artifacts import Artifact

    from flows.nightly import nightly_deletion_batch

    # given three requests for subjects of the training data, and one for nobody
    a, b, c = unique_subjects(project, 3)
    raw = (project / "data/raw/records.jsonl").read_text().splitlines()
    raw_a = [line for line in raw if json.loads(line)["subject_id"] == a]
    texts = submit(project, **{"req-a": a, "req-b": b, "ticket.7": c, "req-nobody": "s9999"})
    # when the nightly batch runs
    summary = nightly_deletion_batch(project_dir=str(project))
    # then the three requests were trained, fused, registered, promoted and purged
    assert summary["outcome"] == "version 1 promoted to production", summary["gate_reasons"]
    assert sorted(summary["new_requests"]) == ["req-a", "req-b", "ticket.7"]
    assert summary["rejected"] == ["req-nobody"] and summary["trained"] == 3
    assert statuses(project) == {"req-a": "purged", "req-b": "purged", "ticket.7": "purged",
                                 "req-nobody": "rejected"}  # fmt: skip
    assert histories(project)["req-a"] == [
        "received", "validated", "unlearned", "fused", "deployed", "purged"]  # fmt: skip
    # and the production version is tied to the log it was cut from
    ctx = load_context(project)
    assert get_alias_version(ctx.settings, PRODUCTION) == 1
    tags = version_tags(ctx.settings, 1)
    assert covered_request_ids(tags) == ["req-a", "req-b", "ticket.7"]
    assert tags["gates_passed"] == "true" and tags["eul.kind"] == "nightly"
    assert (
        tags["eul.gate.mia_auc"].startswith("pass: inside the band")
        and "eul.gate.forget_acc" in tags
    )
    assert len(tags["eul.metric.test_acc"]) <= 6  # rounded: "0.8123"
    with Ledger(ctx.log_url) as ledger:
        assert ledger.entry_at(int(tags["log_seq"])).hash == tags["log_hash"]
    # one MLflow run per request and `models:/...@production` loads base + fused layer
    assert sorted(r.data.tags["eul.request_id"] for r in request_runs(project)) == [
        "req-a", "req-b", "ticket.7"]  # fmt: skip
    assert load_production(ctx.settings).unlearning_layers().active == ["_fused"]
    # the batch run holds the fused layer, the fusion state, the evaluation and a plot
    from mlflow import MlflowClient

    client = MlflowClient(ctx.settings.tracking_uri, registry_uri=ctx.settings.tracking_uri)
    batch_run = client.get_model_version(ctx.settings.model_name, "1").run_id
    artifacts = {a.path for a in client.list_artifacts(batch_run)}
    assert {"fused_layer", "fusion_state", "evaluation.json", "plots"} <= artifacts
    # and tells its story: kind as on the version, what it did, code, data, real duration
    run = client.get_run(batch_run)
    assert run.data.tags["eul.kind"] == "nightly" and run.data.tags["eul.run"] == "batch"
    assert "3 new request(s)" in run.data.tags["mlflow.note.content"]
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.digest == tags["data_dvc_md5"][:36]
    assert run.info.end_time - run.info.start_time > 1000  # trained for seconds, not ms
    request_run = request_runs(project)[0]
    took_ms = request_run.info.end_time - request_run.info.start_time
    assert took_ms >= 1000 * request_run.data.metrics["update_s"] > 0  # the training's own times
    assert "row(s) forgotten" in request_run.data.tags["mlflow.note.content"]
    # the version page: each new request before -> after, the gates in words, the base
    description = client.get_model_version(ctx.settings.model_name, "1").description
    assert "| req-a |" in description and " -> " in description
    assert "| mia_auc |" in description and "inside the band" in description
    assert "none: the base model" in description and "None" not in description
    # the plots: metrics against production (per request too) and the candidate's MIA ROC
    plots = sorted(a.path for a in client.list_artifacts(batch_run, "plots"))
    assert plots == ["plots/metrics.png", "plots/mia-roc.png"]
    for path in plots:
        local = Path(client.download_artifacts(batch_run, path, str(project / "downloaded")))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.rmtree(project / "downloaded")
    evaluation = json.loads(
        Path(client.download_artifacts(batch_run, "evaluation.json")).read_text()
    )
    assert sorted(evaluation["evaluation"]["per_request"]) == ["req-a", "req-b", "ticket.7"]
    roc = evaluation["evaluation"]["mia_roc"]["candidate"]
    assert roc["auc"]["loss"] == pytest.approx(summary["metrics"]["mia_auc"])
    # and no forgotten row's text is in MLflow, the working folder or the data any more
    stores = [project / "state", project / "data", project / ".dvc", project / ".dvc-remote"]
    for text in [t for request in texts.values() for t in request]:
        assert holders(stores, text) == [], text
    # the batch published its report as Prefect artifacts
    markdown = Artifact.get("nightly-deletion-batch-report")
    assert "version 1 promoted to production" in markdown.data
    # on the flow run itself, with where to find the plots of the batch run (plain paths:
    # the store is not a server) and the rejected request with its reason, and no None
    assert markdown.flow_run_id is not None and markdown.task_run_id is None
    for name in ("metrics.png", "mia-roc.png"):
        assert f"- {name}: `runs:/{batch_run}/plots/{name}`, stored at `/" in markdown.data
        assert f"/{batch_run}/artifacts/plots/{name}`" in markdown.data
    assert "- rejected req-nobody: " in markdown.data and "None" not in markdown.data
    assert "file:" not in markdown.data
    assert "| req-a | honoured | purged | 1 |" in markdown.data
    # and `eul audit` says every request is honoured, with the purge hashes as evidence
    code, out = audit_cli("--project", str(project), "--json")
    assert code == 0
    report = json.loads(out)
    purged = {r["request_id"]: r["purge_evidence"] for r in report["honoured"]}
    assert sorted(purged) == ["req-a", "req-b", "ticket.7"]
    assert len(purged["req-a"]["row_hmac"]) == len(texts["req-a"])
    # keyed with the project's key: whoever holds it can check each removed row
    key = evidence_key(project)
    assert purged["req-a"]["row_hmac"] == [keyed_row(key, line) for line in raw_a]
    history = {s: ledger_history(project, s) for s in ("req-a", "req-nobody")}
    assert history["req-a"][0].details["subject_hmac"] == keyed(key, a)
    assert not any(a in json.dumps(e.details) for e in history["req-a"])
    assert not any("s9999" in json.dumps(e.details) for e in history["req-nobody"])
    # and the report anchored the log's head after the purge, in the anchors file and on the
    # DVC remote, and the audit checked the log against it and version 1's tags
    with Ledger(ctx.log_url) as ledger:
        head_seq, head_hash = ledger.head()
    [line] = (project / "state/log-anchors.jsonl").read_text().splitlines()
    written = json.loads(line)
    assert (written["log_seq"], written["log_hash"]) == (head_seq, head_hash)
    assert written["batch"] == summary["batch_id"] and sorted(written) == [
        "at", "batch", "log_hash", "log_seq"]  # fmt: skip
    [stored] = (project / ".dvc-remote/eul-anchors").iterdir()
    assert stored.name.startswith(f"{head_seq:012d}-") and json.loads(stored.read_text())
    assert f"Log head anchored: entry {head_seq}" in markdown.data
    assert report["integrity"] == {"ok": True, "anchors": 3, "findings": [], "stores": {
        "anchors file": 1, "remote local": 1, "versions": 1}}  # fmt: skip

    # when a new request arrives and the next batch runs
    [d] = [s for s in unique_subjects(project, 5) if s not in (a, b, c)][:1]
    submit(project, **{"req-d": d})
    second = nightly_deletion_batch(project_dir=str(project))
    # then only the new request was trained, on top of version 1, and version 2 covers all
    assert second["production_before"] == 1 and second["trained"] == 1
    assert get_alias_version(ctx.settings, PRODUCTION) == 2
    assert covered_request_ids(version_tags(ctx.settings, 2)) == [
        "req-a", "req-b", "req-d", "ticket.7"]  # fmt: skip
    state = FusionState.load(ctx.workdir / "batches" / second["batch_id"] / "state")
    assert state.requests == ["req-a", "req-b", "ticket.7", "req-d"]

    # when req-d's purged entry is cut from the log, its head and state row reset to match
    assert statuses(project)["req-d"] == "purged"
    cut_last_entry(project / "state/deletion-log.sqlite", subject_id=d)
    # then the chain alone checks out, and req-d looks deployed (version 2 covers it)
    verify = ("requests", "verify", "--log-url", ctx.log_url, "--params", str(ctx.params_path))
    assert eul_cli(*verify)[0] == 0
    assert statuses(project)["req-d"] == "deployed"
    # but the second report's anchors (file and remote) show the cut, to the audit and to
    # `eul requests verify --registry`
    code, out = audit_cli("--project", str(project))
    assert code == 1, out
    assert out.count("the log was truncated or rewritten after seq") == 2, out
    code, out = eul_cli(*verify, "--registry")
    assert code == 1 and "remote local recorded entry" in out, out


def test_a_failed_gate_registers_without_promoting_until_a_reviewer_decides(project):
    from flows.nightly import nightly_deletion_batch
    from flows.promote import promote_version

    # given gates no model can pass: forget accuracy must be 100 points below test accuracy
    set_params(project, gates={"forget_acc_margin": -1.0}, pipeline={"purge": False})
    a, b = unique_subjects(project, 2)
    submit(project, **{"req-a": a, "req-b": b})
    # when the nightly batch runs
    summary = nightly_deletion_batch(project_dir=str(project))
    # then the version is registered with the reasons, as candidate only
    assert summary["outcome"] == "version 1 failed its gates"
    ctx = load_context(project)
    assert get_alias_version(ctx.settings, CANDIDATE) == 1
    assert get_alias_version(ctx.settings, PRODUCTION) is None
    tags = version_tags(ctx.settings, 1)
    assert tags["gates_passed"] == "false"
    assert tags["eul.gate_reasons"].startswith("forget_vs_test: forget accuracy")
    # and the requests stay pending in the log, where the audit shows them
    assert statuses(project) == {"req-a": "fused", "req-b": "fused"}
    code, out = audit_cli("--project", str(project))
    assert code == 0 and "| req-a | pending | fused |" in out
    # and in a month they are overdue: the audit fails
    assert audit_cli("--project", str(project), "--at", "2099-01-01")[0] == 1

    # when a rerun finds nothing new, it registers nothing new
    again = nightly_deletion_batch(project_dir=str(project))
    assert again["version"] == 1 and again["reused"] is True

    # when a reviewer promotes it without a reason, it is refused
    with pytest.raises(PipelineError, match="gates failed"):
        promote_version(reviewer="dana", project_dir=str(project))
    assert get_alias_version(ctx.settings, PRODUCTION) is None
    # with a reason, it becomes production and the requests are deployed
    result = promote_version(
        reviewer="dana", override_reason="margin set too strict", project_dir=str(project)
    )
    assert result["production_after"] == 1
    assert get_alias_version(ctx.settings, PRODUCTION) == 1
    assert statuses(project) == {"req-a": "deployed", "req-b": "deployed"}
    tags = version_tags(ctx.settings, 1)
    assert tags["eul.override_reason"] == "margin set too strict"
    assert tags["eul.promoted_by"] == "reviewer dana"


def test_rerun_after_a_failure_between_registration_and_promotion(project):
    from flows.nightly import nightly_deletion_batch

    a, b = unique_subjects(project, 2)
    submit(project, **{"req-a": a, "req-b": b})
    # given a batch that stops right after registering its version
    set_params(project, pipeline={"drill_fail_at": "after-register"})
    with pytest.raises(PipelineError, match="after-register"):
        nightly_deletion_batch(project_dir=str(project))
    ctx = load_context(project)
    assert get_alias_version(ctx.settings, CANDIDATE) == 1
    assert get_alias_version(ctx.settings, PRODUCTION) is None
    assert statuses(project) == {"req-a": "fused", "req-b": "fused"}
    layer = ctx.workdir / "layers" / "req-a" / "layer.safetensors"
    assert layer.is_file()
    # when it is run again
    set_params(project, pipeline={"drill_fail_at": None})
    summary = nightly_deletion_batch(project_dir=str(project))
    # then it finishes the same batch: the same version promoted, nothing trained again
    assert summary["version"] == 1 and summary["reused"] is True
    assert summary["outcome"] == "version 1 promoted to production", summary["gate_reasons"]
    assert "trained" not in summary
    assert not layer.exists()  # the purge deleted it, with the request's rows
    assert get_alias_version(ctx.settings, PRODUCTION) == 1
    assert len(list((ctx.workdir / "batches").iterdir())) == 1
    # and each request went through each status exactly once, with one MLflow run each
    for history in histories(project).values():
        assert history == ["received", "validated", "unlearned", "fused", "deployed", "purged"]
    assert len(request_runs(project)) == 2
    from mlflow import MlflowClient

    uri = ctx.settings.tracking_uri
    versions = MlflowClient(uri, registry_uri=uri).search_model_versions(
        f"name='{ctx.settings.model_name}'"
    )
    assert [int(v.version) for v in versions] == [1]


# Each other failure drill point: where the batch stops, what the log and the registry hold
# then (statuses; the candidate and production aliases), and how the rerun with the drill
# off finishes (whether it registers the version itself, and its outcome). At the points a
# task's own retry passes (its rerun does not reach the point again: the layer is on disk,
# the version registered, the raw data rewritten), the batch does not stop: that retry
# finishes it (None). The points before a layer's done.json are drilled in tests/pipeline.
_DEPLOYED = ({"req-a": "deployed"}, 1, 1, None, "nothing to do")
_PROMOTED = "promoted to production"
DRILLS = {
    "after-done": None,
    "after-run-logged": ({"req-a": "validated"}, None, None, False, _PROMOTED),
    "before-register": ({"req-a": "unlearned"}, None, None, False, _PROMOTED),
    "after-register-before-alias": None,
    "before-alias": ({"req-a": "fused"}, 1, None, True, _PROMOTED),
    "after-alias": ({"req-a": "fused"}, 1, 1, None, "nothing to do"),
    "after-promote": _DEPLOYED,
    "after-purge-intent": _DEPLOYED,
    "after-raw-rewrite": None,
    "after-dvc-add": None,
    "before-purge-record": _DEPLOYED,
    "after-purge": _DEPLOYED,
}


def batch_runs(root: Path) -> list:
    import mlflow

    settings = load_context(root).settings
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    return client.search_runs([experiment.experiment_id], "tags.`eul.run` = 'batch'")


# `make test` runs one drill point; `make reliability` runs them all.
@pytest.mark.parametrize(
    "point",
    [p if p == "before-purge-record" else pytest.param(p, marks=pytest.mark.reliability)
     for p in sorted(DRILLS)],
)  # fmt: skip
def test_each_failure_drill_stops_there_and_a_rerun_finishes_the_batch(project, point):
    from flows.nightly import nightly_deletion_batch

    (a,) = unique_subjects(project, 1)
    submit(project, **{"req-a": a})
    raw = (project / "data/raw/records.jsonl").read_text().splitlines()
    rows_a = [line for line in raw if json.loads(line)["subject_id"] == a]
    data_md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    ctx = load_context(project)
    layer = ctx.workdir / "layers" / "req-a" / "layer.safetensors"
    set_params(project, pipeline={"drill_fail_at": point})
    if DRILLS[point] is None:
        # given a batch failing at the point once: the task's retry finishes it
        summary = nightly_deletion_batch(project_dir=str(project))
        assert _PROMOTED in summary["outcome"]
    else:
        expected, candidate, production, reused, outcome = DRILLS[point]
        # given a batch that stops at the drill's point
        with pytest.raises(PipelineError, match=f"failure injected at '{point}'"):
            nightly_deletion_batch(project_dir=str(project))
        # then it stopped there: the log and the aliases are as that point leaves them
        assert statuses(project) == expected
        assert get_alias_version(ctx.settings, CANDIDATE) == candidate
        assert get_alias_version(ctx.settings, PRODUCTION) == production
        assert layer.is_file()
        # when it is run again with the drill off
        set_params(project, pipeline={"drill_fail_at": None})
        summary = nightly_deletion_batch(project_dir=str(project))
        # then it finishes the same batch, training nothing again
        assert outcome in summary["outcome"] and summary.get("reused") is reused
        assert "trained" not in summary or summary["trained"] == 0
    assert not layer.exists()  # the purge deleted it, with the request's rows
    assert get_alias_version(ctx.settings, PRODUCTION) == 1
    assert get_alias_version(ctx.settings, CANDIDATE) == 1
    assert histories(project) == {
        "req-a": ["received", "validated", "unlearned", "fused", "deployed", "purged"]
    }
    # with one MLflow run for the request and one for the batch
    assert len(request_runs(project)) == 1 and len(batch_runs(project)) == 1
    # and the purge's evidence complete: every removed row keyed, the data versions it spans
    evidence = ledger_history(project, "req-a")[-1].details["evidence"]
    assert evidence["row_hmac"] == [keyed_row(evidence_key(project), ln) for ln in rows_a]
    assert evidence["rows_removed"] == len(rows_a)
    assert evidence["data_dvc_md5_before"] == data_md5 != evidence["data_dvc_md5_after"]
    assert not [ln for ln in (project / "data/raw/records.jsonl").read_text().splitlines()
                if json.loads(ln)["subject_id"] == a]  # fmt: skip


def test_unlearn_request_handles_one_request_now(project):
    from flows.unlearn_request import unlearn_request

    set_params(project, pipeline={"purge": False})
    a, b = unique_subjects(project, 2)
    submit(project, **{"urgent": a, "later": b})
    # when one request is unlearned on its own
    summary = unlearn_request("urgent", project_dir=str(project))
    # then only that request is deployed; the other waits for the nightly batch
    assert summary["new_requests"] == ["urgent"] and summary["promoted"] is True
    assert statuses(project) == {"urgent": "deployed", "later": "validated"}
    ctx = load_context(project)
    assert covered_request_ids(version_tags(ctx.settings, 1)) == ["urgent"]
    # and asking again changes nothing: it is already honoured
    again = unlearn_request("urgent", project_dir=str(project))
    assert again["not_pending"] == ["urgent"] and again["outcome"] == "nothing to do"
    # while an id the log does not know is an error, not a silent no-op
    with pytest.raises(ParameterError, match="no request 'urgnet'"):
        unlearn_request("urgnet", project_dir=str(project))


def test_compaction_replaces_the_stack_and_keeps_every_request_honoured(project):
    from flows.compact import compact
    from flows.nightly import nightly_deletion_batch

    # given a production model with two requests fused on its base, over the threshold of 1
    set_params(project, compaction={"max_requests": 1}, pipeline={"purge": False})
    a, b, c = unique_subjects(project, 3)
    submit(project, **{"req-a": a, "req-b": b})
    nightly_deletion_batch(project_dir=str(project))
    # when the compact flow runs
    summary = compact(project_dir=str(project))
    # then a retrained base with an empty stack is production, honouring the same requests
    assert summary["compaction"]["due"] and summary["compaction"]["stacked_requests"] == 2
    assert summary["outcome"] == "version 2 promoted to production"
    ctx = load_context(project)
    tags = version_tags(ctx.settings, 2)
    assert tags["eul.kind"] == "compaction"
    assert covered_request_ids(tags) == ["req-a", "req-b"]
    assert FusionState.load(ctx.workdir / "batches" / summary["batch_id"] / "retrain" /
                            "state").requests == []  # fmt: skip
    # and the next request is fused on the new base alone
    submit(project, **{"req-c": c})
    after = nightly_deletion_batch(project_dir=str(project))
    assert after["production_before"] == 2 and after["production_after"] == 3
    state = FusionState.load(ctx.workdir / "batches" / after["batch_id"] / "state")
    assert state.requests == ["req-c"]
    assert covered_request_ids(version_tags(ctx.settings, 3)) == ["req-a", "req-b", "req-c"]
    # and with nothing stacked beyond the threshold, no compaction is due
    assert compact(project_dir=str(project))["outcome"] == "no compaction due"


def _base_objects(root: Path) -> set[str]:
    """The DVC objects of `models/base` as dvc.lock names them (the .dir and its files)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train"]
    [md5] = [o["md5"] for o in lock["outs"] if o["path"] == "models/base"]
    listing = root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    return {md5} | {e["md5"] for e in json.loads(listing.read_text())}


def _stored(folder: Path) -> set[str]:
    base = folder / "files/md5"
    return {p.parent.name + p.name for p in base.glob("*/*")} if base.is_dir() else set()


def _stored_rows(root: Path, subjects: list[str]) -> list[str]:
    """The raw data's rows of `subjects`, as stored."""
    lines = (root / "data/raw/records.jsonl").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and json.loads(line)["subject_id"] in subjects]


def _stored_rows_of(lines: list[str], subject: str) -> list[str]:
    return [line for line in lines if json.loads(line)["subject_id"] == subject]


def _every_store(root: Path) -> list[Path]:
    """The project (data, DVC cache and remote, MLflow, the log, state/), the datasets cache,
    Prefect's database and result folders, and eul's temporary folders."""
    import tempfile

    from eul.pipeline.leak_reading import sqlite_path
    from eul.pipeline.leaks import prefect_locations
    from eul.runtime.scratch import scratch_entries
    from eul.stores.dvc.purge import datasets_cache_root

    urls, folders = prefect_locations(root)
    tops = [root, datasets_cache_root(), *folders]
    tops += [p for p in map(sqlite_path, urls) if p is not None]
    tops += scratch_entries(Path(tempfile.gettempdir()))
    return [p for p in tops if p.exists()]


def _grep(tops: list[Path], needles: list[bytes]) -> list[Path]:
    found = []
    for top in tops:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            data = path.read_bytes()
            if any(n in data for n in needles):
                found.append(path)
    return found


def test_batch_promote_purge_and_compaction_leave_no_trace_and_erase_the_weights(project):
    from mlflow import MlflowClient

    from eul.pipeline.leaks import scan_leaks
    from eul.pipeline.purge_step import purge_deployed
    from eul.runtime.evidence import evidence_key, keyed_row
    from eul.stores.dvc import dvcstore
    from flows.compact import compact
    from flows.nightly import nightly_deletion_batch
    from flows.promote import promote_version

    # given two requests deployed by a nightly batch, their rows and models/base on the remote
    set_params(project, pipeline={"purge": False})
    a, b, c = unique_subjects(project, 3)
    texts = submit(project, **{"req-a": a, "req-b": b})
    dvcstore.push(project, "local")
    base_objects = _base_objects(project)
    assert base_objects <= _stored(project / ".dvc-remote")
    rows = _stored_rows(project, [a, b])
    needles = [json.dumps(t, ensure_ascii=False)[1:-1].encode() for ts in texts.values()
               for t in ts]  # fmt: skip
    assert nightly_deletion_batch(project_dir=str(project))["production_after"] == 1
    assert statuses(project) == {"req-a": "deployed", "req-b": "deployed"}
    ctx = load_context(project)
    keyed = [keyed_row(evidence_key(project), line) for line in rows]
    ids = ["req-a", "req-b"]

    def scan():
        return scan_leaks(ctx, ids, needles=needles, keyed_rows=keyed)

    # before the purge the scan finds them, as text and keyed, and the requests' own files
    before = scan()
    hit = {s.store for s in before.stores if s.hits}
    assert {"data", "dvc-cache", "dvc-remote:local", "mlflow-artifacts"} <= hit, hit
    assert before.store("data").text_hits and before.store("data").keyed_hits
    assert before.store("mlflow-artifacts").request_file_hits
    assert any(s.request_file_hits for s in before.stores if s.store in ("workdir", "state"))
    assert _grep(_every_store(project), needles)
    # when the purge runs while a stray copy of one row sits in state/, it refuses to mark
    set_params(project, pipeline={"purge": True})
    stray = project / "state" / "stray-export.jsonl"
    stray.write_text(rows[0] + "\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="leak scan found copies.*state/stray-export.jsonl"):
        purge_deployed(load_context(project))
    assert statuses(project) == {"req-a": "deployed", "req-b": "deployed"}
    # and once the copy is gone, a rerun purges them with the first run's evidence
    stray.unlink()
    report = purge_deployed(load_context(project))
    assert sorted(report.purged) == ids
    assert statuses(project) == {"req-a": "purged", "req-b": "purged"}
    # then no store holds their rows (text grepped as raw bytes) or their own files
    after = scan()
    assert after.clean, after.to_dict()
    assert _grep(_every_store(project), needles) == []
    with Ledger(ctx.log_url, params_path=ctx.params_path) as ledger:
        [entry] = [e for e in ledger.get("req-a").history if e.status == "purged"]
    assert entry.details["evidence"]["leak_scan"]["hits"] == 0
    mine = {keyed_row(evidence_key(project), line) for line in _stored_rows_of(rows, a)}
    assert set(entry.details["evidence"]["row_hmac"]) == mine

    # given a third request submitted (not yet deployed) and version 1's weights stored
    submit(project, **{"req-c": c})
    client = MlflowClient(ctx.settings.tracking_uri, registry_uri=ctx.settings.tracking_uri)
    location = client.get_model_version_download_uri(ctx.settings.model_name, "1")
    v1_model = Path(location.removeprefix("file://"))
    v1_run = client.get_model_version(ctx.settings.model_name, "1").run_id
    assert (v1_model / "artifacts/base/config.json").is_file()
    # when the compact flow retrains and promotes, and its erase step runs
    summary = compact(project_dir=str(project), force=True, auto_promote=True)
    assert summary["outcome"] == "version 2 promoted to production"
    # then version 2 records what it was trained without, in its tags and its batch folder
    tags = version_tags(ctx.settings, 2)
    assert tags["eul.kind"] == "compaction"
    assert tags["eul.trained_without"] == "req-a,req-b,req-c"
    done = json.loads((ctx.workdir / "batches" / summary["batch_id"] / "retrain" /
                       "done.json").read_text())  # fmt: skip
    assert done["trained_without"] == ["req-a", "req-b", "req-c"]
    # and the purged requests are erased, the one never deployed is not
    assert statuses(project) == {"req-a": "erased", "req-b": "erased", "req-c": "validated"}
    assert sorted(summary["erased"]) == ids
    # and version 1 keeps its record but no weights, here or in its batch run
    old = version_tags(ctx.settings, 1)
    assert old["eul.erased"] == "true" and old["eul.erased_at"]
    assert covered_request_ids(old) == ids
    assert not (v1_model / "artifacts/base").exists()
    assert not (v1_model / "artifacts/layer").exists()
    assert not {a.path for a in client.list_artifacts(v1_run)} & {"fused_layer", "fusion_state"}
    assert (v1_model / "MLmodel").is_file()
    # and models/base is gone from the workspace, the DVC cache and the remote
    assert not (project / "models/base").exists()
    assert not base_objects & _stored(project / ".dvc/cache")
    assert not base_objects & _stored(project / ".dvc-remote")
    # and no working folder of version 1 is left
    assert not (ctx.workdir / "production/v1").exists()
    assert sorted(p.name for p in (ctx.workdir / "batches").iterdir()) == [summary["batch_id"]]
    # and still no store holds the rows
    erased = scan()
    assert erased.clean, erased.to_dict()
    assert _grep(_every_store(project), needles) == []
    # and an erased version may not go back into production
    with pytest.raises(PipelineError, match="weights were erased"):
        promote_version("alice", version=1, override_reason="roll back", project_dir=str(project))
    # and the audit shows both levels, with the erasure
    code, out = audit_cli("--project", str(project), "--json")
    assert code == 0, out
    [row] = [r for r in json.loads(out)["honoured"] if r["request_id"] == "req-a"]
    assert row["level"] == "erased" and row["erase_evidence"]["compaction_version"] == 2
    assert row["erase_evidence"]["versions_erased"] == [1]
    # and a rerun changes nothing: still erased, nothing more to erase
    again = compact(project_dir=str(project))
    assert statuses(project)["req-a"] == "erased" and again["erased"] == []
