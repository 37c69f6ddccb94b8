"""`eul demo` end to end on the tiny configuration the flow tests use: what it prints is
checked against the state it leaves (the deletion log, the MLflow registry, the audit, the
files, the Prefect database), and a second run must reuse all of it."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import FLOW_PARAMS, REPO, STORE_ENV

from eul.cli.demo import NOBODY, REQUESTS_FILE
from eul.cli.main import main
from eul.data.synthetic import SyntheticConfig, generate
from eul.pipeline.context import load_context
from eul.stores.log.store import Ledger
from eul.stores.registry.tags import covered_request_ids
from eul.stores.registry.versions import PRODUCTION, get_alias_version, version_tags

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy"),
]


def run_cli(*args: str) -> tuple[int, str]:
    """`eul ARGS`: exit status and output. (Not capsys: Prefect's log handler would keep
    writing to the stream capsys closes after the test.)"""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def flow_runs(root: Path) -> list[tuple[str, str]]:
    """(flow name, state) of every flow run in the demo's Prefect database."""
    with contextlib.closing(sqlite3.connect(root / ".prefect/prefect.db")) as db:
        return sorted(db.execute(
            "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON r.flow_id = f.id"
        ).fetchall())  # fmt: skip


def printed_section(output: str, title: str) -> list[str]:
    """The indented lines after the summary line `title`, e.g. "files written:"."""
    lines = output.splitlines()
    start = lines.index(title) + 1
    section = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        section.append(line.strip())
    return section


@pytest.fixture(scope="module")
def demo(tmp_path_factory, module_tool_env):
    """The demo run twice in one folder, with tiny params: both outputs, and what the
    first run left behind (files' modification times, the Prefect runs)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in STORE_ENV:
            mp.delenv(name, raising=False)
        work = tmp_path_factory.mktemp("demo")
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        for section, values in FLOW_PARAMS.items():
            params[section].update(values)
        params_file = work / "tiny-params.yaml"
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        root = work / "demo"
        first_code, first = run_cli("demo", "--dir", str(root), "--params", str(params_file))
        after_first = {
            "base": mtimes(root / "models/base"),
            "layers": mtimes(root / "state/pipeline/layers"),
            "flow_runs": flow_runs(root),
        }
        second_code, second = run_cli("demo", "--dir", str(root), "--params", str(params_file))
    return {
        "root": root,
        "params": params,
        "params_file": params_file,
        "first": (first_code, first),
        "second": (second_code, second),
        "after_first": after_first,
    }


def statuses(root: Path) -> dict[str, tuple[str, str | None]]:
    with Ledger(load_context(root).log_url) as ledger:
        return {s.request_id: (s.status, s.note) for s in ledger.list()}


def test_first_run_forgets_three_requests_and_rejects_the_bad_one(demo):
    root = demo["root"]
    code, out = demo["first"]
    assert code == 0, out
    # every step printed its header, in order
    headers = re.findall(r"^== (\d)/8 ", out, flags=re.MULTILINE)
    assert headers == [str(n) for n in range(1, 9)]
    # the requests it says it submitted are in the log, in the states the summary claims
    requests = [json.loads(line) for line in (root / REQUESTS_FILE).read_text().splitlines()]
    valid = [r["request_id"] for r in requests if r["subject_id"] != NOBODY]
    assert len(valid) == 3 and requests[-1] == {"request_id": "demo-bad", "subject_id": NOBODY}
    for r in requests:
        assert f"submitted {r['request_id']}: subject {r['subject_id']}" in out
    states = statuses(root)
    assert {rid: status for rid, (status, _) in states.items()} == {
        **{rid: "purged" for rid in valid}, "demo-bad": "rejected"}  # fmt: skip
    reason = states["demo-bad"][1]
    assert reason == "no records for the subject"  # the log never names the subject
    assert f"rejected demo-bad: {reason}" in out
    assert f"  rejected: demo-bad ({reason})" in out
    assert f"  purged: {', '.join(valid)}" in out
    assert "  pending: none" in out
    # the production version it names is the registry's, covering exactly those requests
    ctx = load_context(root)
    assert get_alias_version(ctx.settings, PRODUCTION) == 1
    tags = version_tags(ctx.settings, 1)
    assert covered_request_ids(tags) == valid
    assert "production model: eul-model version 1" in out
    assert f"  covered_request_ids: {','.join(valid)}" in out
    assert "  eul.promoted_by: reviewer demo" in out
    gates = json.loads(tags["gates_json"])
    for name, gate in gates.items():
        assert f"  {name}: {'passed' if gate['passed'] else 'FAILED'} (" in out
    # the metrics it prints are those of the batch's evaluation
    evaluation = json.loads((ctx.workdir / "batches" / tags["eul.batch_id"] /
                             "evaluation.json").read_text())["evaluation"]  # fmt: skip
    for name in ("test_acc", "forget_acc", "mia_auc"):
        before, after = evaluation["production"][name], evaluation["candidate"][name]
        assert re.search(rf"^  {name} +{before:.3f} -> {after:.3f}$", out, flags=re.MULTILINE)
    # and the audit verdict it reports is what `eul audit` says now
    audit_code, audit_out = run_cli("audit", "--project", str(root))
    assert audit_code == 0 and "# Deletion audit: OK" in audit_out
    assert "audit: OK (exit status 0)" in out


def test_first_run_purged_the_rows_and_never_printed_them(demo):
    root = demo["root"]
    _, out = demo["first"]
    requests = [json.loads(line) for line in (root / REQUESTS_FILE).read_text().splitlines()]
    subjects = {r["subject_id"] for r in requests} - {NOBODY}
    # the rows the requests named, regenerated as `eul data init` made them
    data = demo["params"]["data"]
    config = SyntheticConfig(
        n_subjects=data["n_subjects"],
        records_per_subject=tuple(data["records_per_subject"]),
        memorised_share=data["memorised_share"],
        seed=data["seed"],
    )
    _, records = generate(config)
    forgotten = [r for r in records if r.subject_id in subjects]
    assert forgotten
    raw = (root / "data/raw/records.jsonl").read_text()
    left = {json.loads(line)["record_id"] for line in raw.splitlines() if line.strip()}
    assert not left & {r.record_id for r in forgotten}
    assert f"0 of the {len(forgotten)} purged record ids left in " in out
    # no text of a forgotten row in what the demo printed
    for record in forgotten:
        assert record.text not in out


def test_first_run_points_at_files_and_uis_that_exist(demo):
    root = demo["root"]
    _, out = demo["first"]
    files = printed_section(out, "files written:")
    assert len(files) >= 10
    for line in files:
        path = Path(line.split()[0])
        assert (path if path.is_absolute() else Path.cwd() / path).exists(), line
    where = "\n".join(printed_section(out, "where to look:"))
    mlflow_db = re.search(r"--backend-store-uri sqlite:///(\S+)", where).group(1)
    assert Path(mlflow_db) == root / "state/mlflow.db"
    prefect_db = re.search(r"PREFECT_API_DATABASE_CONNECTION_URL=sqlite\+aiosqlite:///(\S+)",
                           where).group(1)  # fmt: skip
    assert Path(prefect_db) == root / ".prefect/prefect.db"
    assert f"PREFECT_HOME={root / '.prefect'} " in where
    # and that Prefect database holds the two flow runs the demo made
    assert demo["after_first"]["flow_runs"] == [
        ("nightly-deletion-batch", "COMPLETED"), ("promote", "COMPLETED")]  # fmt: skip
    assert "flows run this time: nightly-deletion-batch, promote" in out


def test_second_run_reuses_everything(demo):
    root = demo["root"]
    code, out = demo["second"]
    assert code == 0, out
    # it says it reused, and did not train, submit, run a flow or start Prefect again
    assert "reusing " in out and "already trained (dvc.lock); not trained again" in out
    for rid in ("demo-1", "demo-2", "demo-3", "demo-bad"):
        assert re.search(rf"^   {rid} \(subject \S+\) already in the log since .*nothing changed$",
                         out, flags=re.MULTILINE)  # fmt: skip
    assert "no pending request: an earlier run did this batch" in out
    assert "version 1 is already `production`; nothing to do" in out
    assert "starting a Prefect server" not in out
    assert "flows run this time: none (no work was pending)" in out
    # which is true: the same model files, the same production version, no new flow runs
    assert mtimes(root / "models/base") == demo["after_first"]["base"]
    assert mtimes(root / "state/pipeline/layers") == demo["after_first"]["layers"]
    assert flow_runs(root) == demo["after_first"]["flow_runs"]
    ctx = load_context(root)
    assert get_alias_version(ctx.settings, PRODUCTION) == 1
    assert "production model: eul-model version 1" in out
    assert len(statuses(root)) == 4
    assert "audit: OK (exit status 0)" in out


def test_a_folder_made_with_other_params_is_refused(demo, tmp_path):
    # given the demo folder and a params file that differs from the one it was made with
    other = tmp_path / "other.yaml"
    other.write_text(demo["params_file"].read_text().replace("epochs: 2", "epochs: 3", 1))
    # then the demo stops at once with one line naming the fix
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _ = run_cli("demo", "--dir", str(demo["root"]), "--params", str(other))
    assert code == 2
    assert err.getvalue().startswith("eul: error: ")
    assert "was made with other params" in err.getvalue() and "rm -rf" in err.getvalue()
    assert len(err.getvalue().splitlines()) == 1
    assert get_alias_version(load_context(demo["root"]).settings, PRODUCTION) == 1


def test_run_shown_relays_output_and_says_when_a_stage_is_silent(tmp_path):
    from eul.cli.demo_project import run_shown

    # given a command that names its stage, is silent for a while, then finishes
    script = "echo \"Running stage 'train':\"; sleep 1.6; echo 'Use `dvc push` to send'; exit 3"
    lines: list[str] = []
    # when it runs with a heartbeat every half second
    code = run_shown(["sh", "-c", script], tmp_path, lines.append, every_s=0.5)
    # then its output came through, less dvc's advice, with heartbeats naming the stage
    assert code == 3
    assert lines[0] == "   | Running stage 'train':"
    beats = [line for line in lines if line.startswith("   ... stage 'train' still running (")]
    assert 1 <= len(beats) <= 4 and len(lines) == 1 + len(beats)
