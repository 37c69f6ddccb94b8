"""The leak scan on real stores: a DVC repo with a local remote, MLflow on SQLite and a file
artifact store, a Prefect-style SQLite database and result folder, a datasets cache, state/,
the working folder and eul's temporary folders. One project holds a purged row in every
store and must fail the scan in each; its twin holds the same stores without that row and
must pass; removing the copies makes the first one pass too."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from eul.pipeline.context import load_context
from eul.pipeline.files import layer_key
from eul.pipeline.leaks import LeakReport, prefect_locations, scan_leaks
from eul.runtime.evidence import evidence_key, keyed_row, row_sha256
from eul.runtime.scratch import SCRATCH_KINDS, scratch_entries, scratch_folder
from eul.stores.dvc import dvcstore
from eul.stores.dvc.partition import forget_filename
from eul.stores.registry.runs import log_request_run

REQUEST = "req/1"
KEPT = [
    {"record_id": f"r{i}", "subject_id": f"s{i}", "text": f"a kept review number {i} of many"}
    for i in range(4)
]
PURGED = {
    "record_id": "r9",
    "subject_id": "s9",
    "text": "the purged review that must leave every single store",
}
LINE = json.dumps(PURGED)
# What the purge holds while it still has the text: the row and its long field.
NEEDLES = [LINE.encode(), PURGED["text"].encode()]
# Stores where the row is planted as a JSON line (a text hit and a keyed hit each).
ROW_STORES = (
    "data",
    "dvc-cache",
    "dvc-remote:local",
    "mlflow-db",
    "mlflow-artifacts",
    "prefect-db",
    "prefect-results",
    "datasets-cache",
    "workdir",
    "state",
    "temp",
)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _sqlite_with(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE artifact (id INTEGER PRIMARY KEY, data TEXT)")
        conn.executemany("INSERT INTO artifact (data) VALUES (?)", [(json.dumps(r),) for r in rows])
    conn.close()


def _build(root: Path, leak: bool) -> dict[str, Path]:
    """Every store, holding the kept rows; with `leak`, the purged row too."""
    rows = KEPT + ([PURGED] if leak else [])
    outside = root.parent / "outside"
    places = {
        "temp": outside / "tmp",
        "prefect": outside / "prefect-home",
        "datasets": outside / "hf-datasets",
    }
    _jsonl(root / "data/raw/records.jsonl", rows)
    dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.push(root)
    _jsonl(root / "data/prepared/train.jsonl", rows)
    _jsonl(root / "data/partition/retained.jsonl", KEPT)
    if leak:
        _jsonl(root / "data/partition/forget" / forget_filename(REQUEST), [PURGED])
        layer = root / "state/pipeline/layers" / layer_key(REQUEST)
    else:
        layer = root / "state/pipeline/layers" / layer_key("req-kept")
    layer.mkdir(parents=True)
    (layer / "layer.json").write_text(json.dumps({"width": 4}))
    _jsonl(root / "state/pipeline/batches/b1/evaluation.jsonl", rows)
    _jsonl(root / "state/leftover.jsonl", rows)
    _jsonl(places["temp"] / "eul-read-x" / "copy.jsonl", rows)
    _jsonl(places["temp"] / "someone-else" / "copy.jsonl", [PURGED])  # not eul's: not read
    # another project (a benchmark's, say) under an `eul-` name is not this project's copy
    _jsonl(places["temp"] / "eul-reliability-x" / "project" / "data.jsonl", [PURGED])
    _jsonl(places["datasets"] / "json" / "default-abc" / "copy.jsonl", rows)
    _sqlite_with(places["prefect"] / "prefect.db", rows)
    _jsonl(places["prefect"] / "storage" / "result-1", rows)

    ctx = load_context(root)
    runs = root / "runs-input"
    _jsonl(runs / "layer" / "rows.jsonl", rows)
    rid = REQUEST if leak else "req-kept"
    run_id = log_request_run(ctx.settings, rid, runs / "layer", {"forget_acc": 0.5})
    if leak:
        from eul.stores.registry.settings import tracking

        with tracking(ctx.settings) as client:
            client.set_tag(run_id, "note", LINE)
    shutil.rmtree(runs)
    return places


@pytest.fixture(scope="module")
def projects(tmp_path_factory, module_tool_env, new_dvc_project):
    """(leaky project, clean twin, outside folders of each)."""
    base = tmp_path_factory.mktemp("leaks")
    built = {}
    for name, leak in (("leaky", True), ("clean", False)):
        root = new_dvc_project(base / name / "project")
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            built[name] = (root, _build(root, leak))
    return built


def _scan(root: Path, places: dict[str, Path], monkeypatch, needles=NEEDLES) -> LeakReport:
    monkeypatch.setenv("PREFECT_HOME", str(places["prefect"]))
    monkeypatch.delenv("PREFECT_LOCAL_STORAGE_PATH", raising=False)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(places["datasets"]))
    ctx = load_context(root)
    rows = [keyed_row(evidence_key(root), LINE)]
    return scan_leaks(ctx, [REQUEST], needles, rows, temp_root=places["temp"])


def test_every_store_reports_the_purged_row(projects, monkeypatch):
    # given a project with the purged row in every store, and its request's own files
    root, places = projects["leaky"]
    # when it is scanned with the text and the keyed digest
    report = _scan(root, places, monkeypatch)
    # then each store finds the row both ways, and the scan fails
    assert not report.clean
    assert report.errors == ()
    for name in ROW_STORES:
        store = report.store(name)
        assert store.files_scanned > 0, name
        assert store.text_hits, name
        assert store.keyed_hits, name
    assert "data/raw/records.jsonl" in report.store("data").keyed_hits
    assert "state/leftover.jsonl" in report.store("state").text_hits
    # the request's own files: forget file, layer folder, MLflow request run
    forget = f"data/partition/forget/{forget_filename(REQUEST)}"
    assert forget in report.store("data").request_file_hits
    assert report.store("workdir").request_file_hits == (
        f"state/pipeline/layers/{layer_key(REQUEST)}",
    )
    runs = report.store("mlflow-artifacts").request_file_hits
    assert len(runs) == 1 and runs[0].startswith("mlflow run ")
    # the temporary folder of someone else is not read
    assert all("someone-else" not in hit for hit in report.store("temp").text_hits)


def test_the_report_holds_paths_never_text(projects, monkeypatch):
    root, places = projects["leaky"]
    report = _scan(root, places, monkeypatch)
    shown = json.dumps(report.to_dict())
    assert PURGED["text"] not in shown
    assert report.to_dict()["hits"] == report.hits > 0


def test_keyed_digests_alone_find_the_row_after_the_text_is_gone(projects, monkeypatch):
    # given only the keyed digest (the log's evidence), no needles
    root, places = projects["leaky"]
    report = _scan(root, places, monkeypatch, needles=())
    # then every store still reports the row, by its keyed hash
    assert report.needles == 0
    for name in ROW_STORES:
        assert report.store(name).keyed_hits, name
        assert report.store(name).text_hits == ()


def test_a_reformatted_copy_is_found_by_its_keyed_hash(projects, monkeypatch, tmp_path):
    # given the row re-encoded (other key order, spaces, nested in a document) in state/
    root, places = projects["clean"]
    copy = root / "state" / "report.json"
    reordered = dict(reversed(list(PURGED.items())))
    copy.write_text(json.dumps({"rows": [reordered]}, indent=2))
    try:
        report = _scan(root, places, monkeypatch, needles=())
        # then the keyed comparison finds it, though no stored byte string equals the row
        assert report.store("state").keyed_hits == ("state/report.json",)
    finally:
        copy.unlink()


def test_the_same_stores_without_the_row_are_clean(projects, monkeypatch):
    # given the twin: the same stores, every kept row, no purged one
    root, places = projects["clean"]
    report = _scan(root, places, monkeypatch)
    # then nothing is found, though every store was read
    assert report.clean, report.to_dict()
    for name in ROW_STORES:
        assert report.store(name).files_scanned > 0, name
    assert report.store("data").bytes_scanned > 0


def test_removing_the_copies_makes_the_scan_pass(projects, monkeypatch, tmp_path):
    # given a copy of the leaky project
    leaky_root, leaky_places = projects["leaky"]
    root = tmp_path / "project"
    shutil.copytree(leaky_root, root, symlinks=True)
    places = {k: tmp_path / "outside" / v.name for k, v in leaky_places.items()}
    for key, folder in leaky_places.items():
        shutil.copytree(folder, places[key])
    # when every copy of the row and every file of the request is removed
    _jsonl(root / "data/raw/records.jsonl", KEPT)
    _jsonl(root / "data/prepared/train.jsonl", KEPT)
    dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.push(root)
    dvcstore.gc_workspace(root, "local")
    shutil.rmtree(root / "data/partition/forget")
    shutil.rmtree(root / "state/pipeline/layers" / layer_key(REQUEST))
    for path in (
        root / "state/pipeline/batches/b1/evaluation.jsonl",
        root / "state/leftover.jsonl",
        places["temp"] / "eul-read-x" / "copy.jsonl",
        places["datasets"] / "json" / "default-abc" / "copy.jsonl",
        places["prefect"] / "storage" / "result-1",
    ):
        _jsonl(path, KEPT)
    _sqlite_with(places["prefect"] / "prefect-new.db", KEPT)
    (places["prefect"] / "prefect-new.db").replace(places["prefect"] / "prefect.db")
    shutil.rmtree(root / "state/mlartifacts")
    (root / "state/mlflow.db").unlink()
    report = _scan(root, places, monkeypatch)
    # then the scan is clean
    assert report.clean, report.to_dict()
    assert report.store("dvc-remote:local").files_scanned > 0


def test_deleted_rows_left_in_a_sqlite_file_are_found(tmp_path, monkeypatch):
    # given a SQLite database whose rows holding the purged text were deleted, not vacuumed,
    # by a SQLite that leaves deleted content in place (secure_delete off, as many builds do)
    root = tmp_path / "project"
    db = root / "state" / "other.sqlite"
    _sqlite_with(db, [PURGED] * 3)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA secure_delete = 0")
        conn.execute("DELETE FROM artifact WHERE id > 0")
    conn.close()
    places = {"temp": tmp_path / "t", "prefect": tmp_path / "p", "datasets": tmp_path / "d"}
    # then its bytes still hold the text and the scan says so
    report = _scan(root, places, monkeypatch)
    assert report.store("state").text_hits == ("state/other.sqlite",)


def test_an_unreadable_store_fails_the_scan(projects, monkeypatch, tmp_path):
    # given a project whose DVC remote cannot be read
    root = tmp_path / "project"
    shutil.copytree(projects["clean"][0], root, symlinks=True)
    dvcstore.add_s3_remote(root, "gone", "s3://no-bucket/x", endpoint_url="http://127.0.0.1:9")
    places = projects["clean"][1]
    report = _scan(root, places, monkeypatch)
    # then the store reports an error and the scan is not clean
    assert report.store("dvc-remote:gone").error
    assert report.hits == 0
    assert not report.clean


def test_prefect_locations_follow_the_environment_and_the_profile(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(home))
    for name in (
        "PREFECT_PROFILE",
        "PREFECT_PROFILES_PATH",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "PREFECT_LOCAL_STORAGE_PATH",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH",
    ):
        monkeypatch.delenv(name, raising=False)
    # (first: what the environment says; a Prefect running in this process adds its own)
    urls, folders = prefect_locations(tmp_path)
    assert urls[:1] == [f"sqlite+aiosqlite:///{home / 'prefect.db'}"]
    assert folders[:1] == [home / "storage"]
    (home / "profiles.toml").write_text(
        'active = "work"\n[profiles.work]\n'
        'PREFECT_RESULTS_LOCAL_STORAGE_PATH = "$PREFECT_HOME/results"\n'
    )
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "sqlite+aiosqlite:////x/p.db")
    urls, folders = prefect_locations(tmp_path)
    assert urls[:1] == ["sqlite+aiosqlite:////x/p.db"]
    assert folders[:1] == [home / "results"]


def test_every_temporary_folder_of_eul_is_a_named_scratch_folder():
    # the scan reads eul's temporary folders by their kind's prefix: every tempfile call in
    # eul/ goes through eul.runtime.scratch, and an unknown kind is refused
    import re

    package = Path(__file__).resolve().parents[2] / "eul"
    calls = re.compile(r"tempfile\.(TemporaryDirectory|mkdtemp|mkstemp|NamedTemporaryFile)\(")
    for path in package.rglob("*.py"):
        if path.name != "scratch.py":
            assert not calls.search(path.read_text()), path
    for kind in SCRATCH_KINDS:
        with scratch_folder(kind) as tmp:
            assert Path(tmp) in scratch_entries(Path(tmp).parent)
    with pytest.raises(ValueError, match="unknown scratch kind"):
        scratch_folder("other")
    assert row_sha256(LINE)  # the row the tests plant is a valid stored row


def test_s3_remote_and_s3_artifacts_are_read(dvc_project, s3_server, monkeypatch, tmp_path):
    # given a DVC remote and an MLflow artifact store on a real S3 server, both holding the row
    root = dvc_project
    prefix = f"leaks-{tmp_path.name}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("EUL_MLFLOW_ARTIFACTS", f"s3://{s3_server.bucket}/{prefix}/mlflow")
    dvcstore.add_s3_remote(
        root, "s3", f"s3://{s3_server.bucket}/{prefix}/dvc", endpoint_url=s3_server.endpoint
    )
    _jsonl(root / "data/raw/records.jsonl", KEPT + [PURGED])
    dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.push(root, "s3")
    ctx = load_context(root)
    layer = tmp_path / "layer"
    _jsonl(layer / "rows.jsonl", [PURGED])
    log_request_run(ctx.settings, REQUEST, layer, {"forget_acc": 0.5})
    places = {"temp": tmp_path / "t", "prefect": tmp_path / "p", "datasets": tmp_path / "d"}
    # then both report it, by text and by keyed hash, and the request's run
    report = _scan(root, places, monkeypatch)
    for name in ("dvc-remote:s3", "mlflow-artifacts"):
        store = report.store(name)
        assert store.error is None, store.error
        assert store.text_hits and store.keyed_hits, name
    artifacts = report.store("mlflow-artifacts")
    assert all(hit.startswith("s3://") for hit in artifacts.text_hits)
    assert len(artifacts.request_file_hits) == 1
    # when the row leaves the remote and the run's artifacts are deleted
    _jsonl(root / "data/raw/records.jsonl", KEPT)
    dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.push(root, "s3")
    dvcstore.gc_workspace(root, "s3")
    shutil.rmtree(s3_server.bucket_dir / prefix / "mlflow")
    report = _scan(root, places, monkeypatch)
    # then they are clean
    for name in ("dvc-remote:s3", "mlflow-artifacts"):
        assert report.store(name).hits == 0, name
    assert report.store("dvc-remote:s3").files_scanned > 0


def test_an_empty_forget_file_of_a_purged_request_is_no_hit(tmp_path, monkeypatch):
    # given a partition rebuilt after the purge: the request's forget set has no rows left
    root = tmp_path / "project"
    forget = root / "data/partition/forget" / forget_filename(REQUEST)
    forget.parent.mkdir(parents=True)
    forget.write_text("")
    places = {"temp": tmp_path / "t", "prefect": tmp_path / "p", "datasets": tmp_path / "d"}
    assert _scan(root, places, monkeypatch).clean
    # when it still holds a row, it is one
    forget.write_text(json.dumps(KEPT[0]) + "\n")
    report = _scan(root, places, monkeypatch)
    assert report.store("data").request_file_hits == (f"data/partition/forget/{forget.name}",)
