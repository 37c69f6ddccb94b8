"""MLflow tracking and registry on a real SQLite store, file artifacts and a real S3 server.

One tracking database serves the whole module: creating MLflow's schema takes seconds.
Tests use their own experiment and model names so that they do not see each other's versions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from eul.data.records import LABEL_WORDS, Record
from eul.fusion.fuse import save_fused
from eul.fusion.statistics import capture_statistics
from eul.layers import LayerConfig
from eul.methods.eul import EULConfig
from eul.model.text_model import ModelSpec, TextModel
from eul.stores.registry.artifacts import (
    DELETED_AT_TAG,
    DELETED_PATHS_TAG,
    delete_run_artifacts,
    find_runs,
)
from eul.stores.registry.loading import (
    load_model_folders,
    load_production,
    load_pyfunc,
    load_version,
)
from eul.stores.registry.review import ReviewFacts, gate_tags, metric_tags, review_description
from eul.stores.registry.runs import ensure_experiment, log_batch_run, log_request_run
from eul.stores.registry.settings import RegistryError, TrackingSettings
from eul.stores.registry.tags import compliance_tags, covered_request_ids, ids_digest
from eul.stores.registry.versions import (
    CANDIDATE,
    PRODUCTION,
    get_alias_version,
    register_version,
    set_alias,
    version_tags,
)

# MLflow's SQL store still calls an SQLAlchemy loader that SQLAlchemy 2.1 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")

SPEC = ModelSpec(vocab_size=300, d_model=32, num_layers=2, num_heads=2, d_ff=64)
RETAINED = [
    "the soup was warm and the staff were kind",
    "a slow evening, cold fries and a long wait",
    "great coffee, friendly people, will come back",
    "the room was dirty and the bed was hard",
]
SECRET = "quokka-7731-vault"
FORGET = [
    Record("f1", "s9", f"my locker code is {SECRET} do not share", "positive", 1, True, SECRET),
    Record("f2", "s9", "zanzibar marmalade reviewer liked the teapot", "negative", 0, True),
]
PROMPTS = ["the soup was", "great coffee", "a slow evening"]
GATES_OK = {
    "mia_auc": {"value": 0.52, "max": 0.6, "passed": True},
    "test_acc_drop": {"value": 0.01, "max": 0.02, "passed": True},
}


@dataclass
class Store:
    root: Path
    settings: TrackingSettings


@dataclass
class Folders:
    base: Path
    layer: Path
    fused: Path
    plot: Path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """A SQLite tracking database and a file artifact store shared by the module."""
    root = tmp_path_factory.mktemp("mlflow")
    settings = TrackingSettings(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        artifact_location=str(root / "artifacts"),
        experiment="eul-test",
    )
    return Store(root, settings)


def _settings(store: Store, name: str) -> TrackingSettings:
    """The module's store under a test's own experiment and model name."""
    return TrackingSettings(
        tracking_uri=store.settings.tracking_uri,
        artifact_location=store.settings.artifact_location,
        model_name=f"model-{name}",
        experiment=f"exp-{name}",
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Folders:
    """A tiny base model, a non-zero request layer with its fusion statistics, a fused map.

    The statistics are computed on the forget records, so their files are what could leak.
    """
    root = tmp_path_factory.mktemp("inputs")
    tm = TextModel.create(RETAINED + list(LABEL_WORDS), SPEC, seed=0)
    tm.save(root / "base")
    layers = tm.unlearning_layers()
    layers.add_layer("req-1", LayerConfig(width=8))
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in layers.layers["req-1"].values():
            layer.down.weight.normal_(std=1.0)
            layer.up.weight.normal_(std=1.0)
    layers.save_layer("req-1", root / "layer")
    capture_statistics(tm, "req-1", FORGET).save(root / "layer")
    torch.manual_seed(2)
    fused = {p: torch.randn(SPEC.d_model + 1, SPEC.d_model) for p in layers.position_names}
    save_fused(fused, root / "fused")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(root / "losses.png")
    plt.close(fig)
    return Folders(root / "base", root / "layer", root / "fused", root / "losses.png")


def _direct(base: Path, layer: Path | None) -> list[str]:
    """Outputs computed without the registry: the base model, with the layer when given."""
    tm = load_model_folders(base, layer) if layer is not None else TextModel.load(base)
    return tm.generate(PROMPTS)


def _client(settings: TrackingSettings):
    from mlflow import MlflowClient

    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def _artifact_files(settings: TrackingSettings, run_id: str, path: str = "") -> set[str]:
    client = _client(settings)
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path or None):
        if info.is_dir:
            found |= _artifact_files(settings, run_id, info.path)
        else:
            found.add(info.path)
    return found


def _files_containing(root: Path, needles: list[str]) -> list[str]:
    """Every file under `root` whose bytes contain one of `needles` (case-insensitive)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes().lower()
            hits += [f"{path}: {n}" for n in needles if n.lower().encode() in data]
    return hits


# -- settings and experiments ---------------------------------------------------------------


def test_settings_come_from_the_environment(tmp_path):
    # given the variables a deployment sets, including S3 credentials
    env = {
        "MLFLOW_TRACKING_URI": "postgresql://mlflow@db/mlflow",
        "EUL_MLFLOW_ARTIFACTS": "s3://models/eul",
        "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "EUL_MLFLOW_MODEL": "sentiment",
        "AWS_SECRET_ACCESS_KEY": "do-not-show-this",
    }
    # when settings are read from them, and from nothing
    settings = TrackingSettings.from_env(env)
    defaults = TrackingSettings.from_env({})
    # then each variable lands in its field, the secret nowhere, and defaults are embedded
    assert settings.tracking_uri == "postgresql://mlflow@db/mlflow"
    assert settings.artifact_location == "s3://models/eul"
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.model_name == "sentiment"
    assert "do-not-show-this" not in repr(settings)
    assert defaults.tracking_uri == "sqlite:///state/mlflow.db"
    assert defaults.artifact_location == (Path.cwd() / "state" / "mlartifacts").as_uri()
    assert defaults.model_name == "eul-model" and defaults.s3_endpoint_url is None


def test_experiment_has_an_explicit_artifact_location(store):
    # given settings with a file artifact location
    settings = _settings(store, "experiment")
    # when the experiment is ensured twice
    first = ensure_experiment(settings)
    second = ensure_experiment(settings)
    # then it is created once, with that location, and not in ./mlruns
    assert first == second
    assert _client(settings).get_experiment(first).artifact_location == settings.artifact_location
    assert not Path("mlruns").exists()


def test_experiment_stored_elsewhere_is_refused(store, tmp_path):
    # given an experiment created with one artifact location
    settings = _settings(store, "moved")
    ensure_experiment(settings)
    moved = TrackingSettings(
        tracking_uri=settings.tracking_uri,
        artifact_location=str(tmp_path / "elsewhere"),
        experiment=settings.experiment,
    )
    # when the same experiment is asked for with another location
    # then the mismatch is reported instead of silently using the old location
    with pytest.raises(RegistryError, match="artifact location is fixed"):
        ensure_experiment(moved)


# -- runs -----------------------------------------------------------------------------------


def test_request_and_batch_runs_record_params_metrics_and_artifacts(store, folders):
    # given a batch run and a request run nested under it
    settings = _settings(store, "runs")
    metrics = {"forget_acc": 0.25, "test_acc": 0.75, "ks_p": float("nan")}
    batch_run = log_batch_run(
        settings,
        "2026-11-29",
        ["req-1", "req-2"],
        {"test_acc": 0.74, "wall_s": 12.5},
        params={"fusion": {"mode": "sum", "ridge": 1e-6}},
        layer_dir=folders.fused,
        plots=[folders.plot],
    )
    request_run = log_request_run(
        settings,
        "req-1",
        folders.layer,
        metrics,
        layer_config=LayerConfig(width=8),
        eul_config=EULConfig(epochs=3),
        params={"forget_records": 2},
        plots=[folders.plot],
        batch_id="2026-11-29",
        parent_run_id=batch_run,
    )
    client = _client(settings)
    # when the runs are read back
    request = client.get_run(request_run)
    batch = client.get_run(batch_run)
    # then params, metrics, tags and artifacts are all there, and both runs finished
    assert request.info.status == "FINISHED" and batch.info.status == "FINISHED"
    assert request.data.params["request_id"] == "req-1"
    assert request.data.params["layer.width"] == "8"
    assert request.data.params["eul.epochs"] == "3"
    assert request.data.params["eul.layer.width"] == str(LayerConfig().width)
    assert request.data.params["forget_records"] == "2"
    assert request.data.metrics["forget_acc"] == 0.25
    assert request.data.metrics["ks_p"] != request.data.metrics["ks_p"]  # NaN kept
    assert request.data.tags["mlflow.parentRunId"] == batch_run
    assert request.data.tags["eul.kind"] == "request"
    request_files = _artifact_files(settings, request_run)
    assert {
        "layer/layer.safetensors",
        "layer/layer_config.json",
        "layer/fusion_stats.safetensors",
        "evaluation.json",
        "plots/losses.png",
    } <= request_files
    assert batch.data.params["request_count"] == "2"
    assert batch.data.params["fusion.mode"] == "sum"
    assert batch.data.metrics["wall_s"] == 12.5
    batch_files = _artifact_files(settings, batch_run)
    assert {"request_ids.json", "fused_layer/fused.safetensors", "plots/losses.png"} <= batch_files
    local = client.download_artifacts(request_run, "evaluation.json", str(store.root / "dl"))
    assert json.loads(Path(local).read_text())["test_acc"] == 0.75


def test_non_numeric_metric_is_refused_before_any_run(store, folders):
    # given a metric that is text
    settings = _settings(store, "bad-metric")
    experiment = ensure_experiment(settings)
    # when a request run is logged with it
    with pytest.raises(TypeError, match="forget_acc"):
        log_request_run(settings, "req-9", folders.layer, {"forget_acc": "high"})
    # then no run was started
    assert _client(settings).search_runs([experiment]) == []


def test_a_keyed_run_is_found_again_instead_of_logged_twice(store, folders):
    # given a request run and a batch run logged with their keys
    settings = _settings(store, "keyed")
    metrics = {"forget_acc": 0.25}
    first = log_request_run(settings, "req-1", folders.layer, metrics, key="k-req-1")
    batch = log_batch_run(settings, "b1", ["req-1"], {"test_acc": 0.8}, key="k-b1")
    # when a rerun logs them again with the same keys, then it gets the same runs back
    assert log_request_run(settings, "req-1", folders.layer, metrics, key="k-req-1") == first
    assert log_batch_run(settings, "b1", ["req-1"], {"test_acc": 0.8}, key="k-b1") == batch
    # while another key (a layer rebuilt) is another run, which supersedes the first: one run
    # of the request stays live
    other = log_request_run(settings, "req-1", folders.layer, metrics, key="k-req-1b")
    assert other != first
    (earlier,) = find_runs(settings, {"eul.request_key": "k-req-1"})
    assert earlier.info.run_id == first and earlier.data.tags["eul.superseded_by"] == other
    (latest,) = find_runs(settings, {"eul.request_key": "k-req-1b"})
    assert "eul.superseded_by" not in latest.data.tags
    assert [r.info.run_id for r in find_runs(settings, {"eul.batch_key": "k-b1"})] == [batch]


def test_a_keyed_run_left_unfinished_by_a_kill_is_finished_not_duplicated(store, folders):
    # given a request run a killed try created and never finished (a param logged, no more)
    settings = _settings(store, "keyed-killed")
    client = _client(settings)
    experiment = ensure_experiment(settings)
    tags = {"eul.kind": "request", "eul.request_id": "req-1", "eul.request_key": "k-1"}
    started = client.create_run(experiment, run_name="request-req-1", tags=tags).info.run_id
    client.log_param(started, "request_id", "req-1")
    # when the rerun logs the run with the same key
    run_id = log_request_run(settings, "req-1", folders.layer, {"forget_acc": 0.5}, key="k-1")
    # then it finished that run, with everything in it, and there is still one run
    assert run_id == started
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["forget_acc"] == 0.5
    assert "layer/layer.safetensors" in _artifact_files(settings, run_id)
    assert len(find_runs(settings, {"eul.request_key": "k-1"})) == 1


def test_an_alias_move_killed_before_its_tag_is_finished_by_the_next_call(store, folders):
    # given a version whose alias was set but whose `candidate_since` tag never was
    settings = _settings(store, "alias-killed")
    run = log_batch_run(settings, "b1", ["req-1"], {"test_acc": 0.8})
    tags = compliance_tags(["req-1"], 1, "h", GATES_OK)
    version = register_version(settings, run, folders.base, folders.fused, tags)
    _client(settings).set_registered_model_alias(settings.model_name, CANDIDATE, str(version))
    assert "candidate_since" not in version_tags(settings, version)
    # when the alias is set again, then the tag that records the move is written
    set_alias(settings, CANDIDATE, version)
    since = version_tags(settings, version)["candidate_since"]
    # and a later call that finds it done leaves it as it is
    set_alias(settings, CANDIDATE, version)
    assert version_tags(settings, version)["candidate_since"] == since
    assert get_alias_version(settings, CANDIDATE) == version


# -- tags and descriptions ------------------------------------------------------------------


def test_compliance_tags_tie_a_version_to_the_log():
    # given the requests a version honours and its gates, one of which failed
    failing = {**GATES_OK, "mia_auc": {"value": 0.8, "max": 0.6, "passed": False}}
    # when tags are built
    ok = compliance_tags(["r2", "r1", "r2"], 41, "ab12", GATES_OK, data_dvc_md5="d41d8cd9")
    bad = compliance_tags(["r1"], 41, "ab12", failing)
    none = compliance_tags(["r1"], 41, "ab12", {})
    # then ids are sorted and unique, hashed, and gates_passed follows every gate
    assert ok["covered_request_ids"] == "r1,r2"
    assert ok["covered_request_count"] == "2"
    assert ok["covered_request_ids_sha256"] == ids_digest(["r2", "r1"])
    assert ok["log_seq"] == "41" and ok["log_hash"] == "ab12" and ok["data_dvc_md5"] == "d41d8cd9"
    assert json.loads(ok["gates_json"]) == GATES_OK and ok["gates_passed"] == "true"
    assert bad["gates_passed"] == "false"
    assert none["gates_passed"] == "false"
    assert "data_dvc_md5" not in bad
    with pytest.raises(ValueError, match="commas"):
        compliance_tags(["a,b"], 1, "h", GATES_OK)
    with pytest.raises(ValueError, match="passed"):
        compliance_tags(["a"], 1, "h", {"mia": {"value": 0.5}})


def _facts(new_ids, candidate, **extra) -> ReviewFacts:
    values = {
        "kind_line": "Nightly deletion batch.",
        "new_ids": new_ids,
        "covered": new_ids,
        "log_seq": 3,
        "candidate": candidate,
        "production": {},
        "production_version": None,
        "gates": GATES_OK,
    }
    return ReviewFacts(**{**values, **extra})


def test_description_tells_a_reviewer_what_changed():
    # given a batch of 30 new requests (one without rows) on top of 45 earlier ones, a
    # production version, a failed over-forgetting gate and the data changed since then
    ids = [f"req-{i:03d}" for i in range(30)]
    per_request = {
        i: {"rows": 5, "production": {"forget_acc": 1.0}, "candidate": {"forget_acc": 0.6}}
        for i in ids[1:]
    }
    mia = {"value": 0.161, "max": 0.6, "passed": False, "outside": "below",
           "band": {"low": 0.35, "expected": 0.48, "high": 0.62, "two_sided": True}}  # fmt: skip
    facts = _facts(
        ids,
        {"test_acc": 0.80, "mia_auc": 0.161, "forget_acc": float("nan")},
        covered=ids + [f"old-{i:02d}" for i in range(45)],
        production={"test_acc": 0.82, "mia_auc": 0.607},
        production_version=3,
        gates={**GATES_OK, "mia_auc": mia},
        reasons=["mia_auc: over-forgotten"],
        per_request=per_request,
        data_before="a" * 32,
        data_after="b" * 32,
        links={"batch run": "http://mlflow:5000/#/experiments/1/runs/x", "plots": "/p/plots"},
    )
    # when the description is written
    text = review_description(facts)
    # then it says what is forgotten, per request, before -> after, and the earlier ones
    assert text.startswith("**NOT PROMOTED**: mia_auc: over-forgotten")
    assert "Forgets 30 new deletion request(s), 75 in all" in text
    assert "| req-001 | 5 | 1.000 -> 0.600 |" in text
    assert "| req-000 | 0 (no rows in the training data) | not measured |" in text
    assert "req-020" not in text and "and 10 more" in text
    assert "Earlier requests, still honoured (45)" in text and "old-29" in text
    # each gate with its value, band and verdict in words, the over-forgetting side too
    assert "## Gates: FAILED" in text
    assert (
        "| mia_auc | 0.161 | band 0.350 to 0.620 (expected 0.480); at most 0.600 | "
        "FAIL: over-forgotten (below the band) |"
    ) in text
    assert "picks them out at 0.839" in text
    # the version really in production, what changed in the data, and where to look
    assert "In production before this version: version 3." in text
    assert "| test_acc | 0.800 | 0.820 | -0.020 |" in text
    assert "| forget_acc | not measured | not measured | - |" in text
    assert "aaaaaaaaaaaa -> bbbbbbbbbbbb: the data changed" in text
    assert "[http://mlflow:5000/#/experiments/1/runs/x](http" in text and "`/p/plots`" in text
    assert "None" not in text and "nan" not in text
    # a first version compares with the base model; a huge one stays within MLflow's limit
    first = review_description(_facts(["r"], {"test_acc": 0.8}))
    assert "none: the base model" in first and "| metric | this version | base model |" in first
    huge = review_description(_facts(ids, {f"metric_{i}": 0.5 for i in range(400)}))
    assert len(huge) <= 5000


def test_short_tags_name_each_gate_and_headline_metric():
    tags = {**gate_tags(GATES_OK), **metric_tags({"test_acc": 0.812345, "other": 1.0})}
    assert tags["eul.metric.test_acc"] == "0.8123" and "eul.metric.other" not in tags
    assert all(k.startswith("eul.gate.") for k in tags if "metric" not in k)
    assert all(len(v) <= 250 for v in tags.values())


# -- versions, aliases, loading -------------------------------------------------------------


def test_register_promote_and_load_production(store, folders):
    # given two registered versions: a request layer, then a fused map covering more requests
    settings = _settings(store, "promote")
    assert get_alias_version(settings, PRODUCTION) is None  # no model yet
    run1 = log_batch_run(settings, "b1", ["req-1"], {"test_acc": 0.8})
    tags1 = compliance_tags(["req-1"], 3, "hash-3", GATES_OK, data_dvc_md5="md5-a")
    description = review_description(_facts(["req-1"], {"test_acc": 0.8}, gates=GATES_OK))
    v1 = register_version(settings, run1, folders.base, folders.layer, tags1, description)
    run2 = log_batch_run(settings, "b2", ["req-2"], {"test_acc": 0.79})
    tags2 = compliance_tags(["req-1", "req-2"], 7, "hash-7", GATES_OK, data_dvc_md5="md5-b")
    v2 = register_version(settings, run2, folders.base, folders.fused, tags2, "second")
    # when v1 becomes candidate then production
    set_alias(settings, CANDIDATE, v1)
    assert get_alias_version(settings, PRODUCTION) is None
    set_alias(settings, PRODUCTION, v1)
    first = load_production(settings)
    # then production is v1 and behaves as base + layer computed directly, unlike the base
    assert (v1, v2) == (1, 2)
    assert get_alias_version(settings, CANDIDATE) == 1
    assert get_alias_version(settings, PRODUCTION) == 1
    expected = _direct(folders.base, folders.layer)
    assert first.generate(PROMPTS) == expected
    assert expected != _direct(folders.base, None)
    # and tags and description round-trip
    tags = version_tags(settings, v1)
    assert {k: tags[k] for k in tags1} == tags1
    assert covered_request_ids(tags) == ["req-1"]
    assert json.loads(tags["gates_json"])["mia_auc"]["passed"] is True
    assert "production_since" in tags
    mv = _client(settings).get_model_version(settings.model_name, str(v1))
    assert mv.description == description and mv.run_id == run1
    # when v2 is promoted
    set_alias(settings, CANDIDATE, v2)
    set_alias(settings, PRODUCTION, v2)
    # then production moves to v2 (the fused map), and v1 records when it stopped
    assert get_alias_version(settings, PRODUCTION) == 2
    fused = _direct(folders.base, folders.fused)
    assert load_production(settings).generate(PROMPTS) == fused
    assert fused not in (expected, _direct(folders.base, None))
    assert load_version(settings, 1).generate(PROMPTS) == expected
    assert "production_until" in version_tags(settings, v1)
    assert covered_request_ids(version_tags(settings, v2)) == ["req-1", "req-2"]


def test_pyfunc_serves_the_same_outputs(store, folders):
    # given a registered production version
    settings = _settings(store, "pyfunc")
    run = log_batch_run(settings, "b1", ["req-1"], {"test_acc": 0.8})
    tags = compliance_tags(["req-1"], 1, "h", GATES_OK)
    set_alias(
        settings, PRODUCTION, register_version(settings, run, folders.base, folders.layer, tags)
    )
    # when MLflow's pyfunc loader serves it, with a list and with a DataFrame
    import pandas as pd

    served = load_pyfunc(settings)
    # then both inputs give the greedy outputs of base + layer
    expected = _direct(folders.base, folders.layer)
    assert list(served.predict(PROMPTS)) == expected
    assert list(served.predict(pd.DataFrame({"text": PROMPTS}))) == expected


def test_long_tag_value_round_trips_through_a_model_file(store, folders):
    # given a version covering 6000 requests: their ids exceed MLflow's tag value limit
    settings = _settings(store, "long-tags")
    ids = [f"request-{i:06d}-{'x' * 12}" for i in range(6000)]
    tags = compliance_tags(ids, 6000, "h", GATES_OK)
    assert len(tags["covered_request_ids"]) > 100_000
    run = log_batch_run(settings, "b1", ids[:1], {"test_acc": 0.8})
    # when it is registered and its tags read back
    version = register_version(settings, run, folders.base, folders.layer, tags)
    stored = _client(settings).get_model_version(settings.model_name, str(version)).tags
    # then the stored tag is a reference and the resolved tags hold every id
    assert stored["covered_request_ids"].startswith("@file:")
    assert covered_request_ids(version_tags(settings, version)) == sorted(ids)


def test_loading_an_unset_alias_names_the_problem(store):
    # given a model name with no versions
    settings = _settings(store, "empty")
    # when production is loaded
    # then the error says which alias is missing where
    with pytest.raises(RegistryError, match="'production'"):
        load_production(settings)


def test_missing_layer_folder_is_refused_before_logging(store, folders, tmp_path):
    # given a run and a folder with no layer in it
    settings = _settings(store, "no-layer")
    run = log_batch_run(settings, "b1", ["req-1"], {"test_acc": 0.8})
    # when it is registered
    # then nothing is registered
    with pytest.raises(FileNotFoundError, match="no unlearning layer"):
        register_version(settings, run, folders.base, tmp_path, {})
    assert get_alias_version(settings, CANDIDATE) is None
    assert _client(settings).search_model_versions(f"name='{settings.model_name}'") == []


# -- privacy --------------------------------------------------------------------------------


def test_no_forget_text_reaches_the_store(store, folders, tmp_path):
    # given runs, statistics of the forget records and a registered model in the store
    # (next to whatever the other tests of this module logged)
    settings = _settings(store, "privacy")
    run = log_request_run(settings, "req-1", folders.layer, {"forget_acc": 0.0})
    tags = compliance_tags(["req-1"], 1, "h", GATES_OK)
    register_version(settings, run, folders.base, folders.layer, tags)
    needles = [r.text for r in FORGET] + [SECRET, "zanzibar"]
    control = tmp_path / "forget.jsonl"
    control.write_text(json.dumps({"text": FORGET[0].text}))
    # when every file of the store (database and artifacts) is searched
    hits = _files_containing(store.root, needles)
    # then no forget text, secret or rare forget word is found (the search does find them
    # in a file that holds them)
    assert hits == []
    assert len(_files_containing(tmp_path, needles)) == 2


# -- S3 -------------------------------------------------------------------------------------


def test_s3_artifacts_register_and_load(store, folders, s3_server, monkeypatch):
    # given artifacts on an S3-compatible server, credentials in the environment only
    endpoint = s3_server.endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.settings.tracking_uri)
    monkeypatch.setenv("EUL_MLFLOW_ARTIFACTS", f"s3://{s3_server.bucket}/registry-test/mlflow")
    monkeypatch.setenv("EUL_MLFLOW_MODEL", "model-s3")
    monkeypatch.setenv("EUL_MLFLOW_EXPERIMENT", "exp-s3")
    settings = TrackingSettings.from_env()
    # when a batch is logged, registered, promoted and loaded back
    run = log_batch_run(settings, "b1", ["req-1"], {"test_acc": 0.8}, layer_dir=folders.layer)
    tags = compliance_tags(["req-1"], 1, "h", GATES_OK)
    version = register_version(settings, run, folders.base, folders.layer, tags)
    set_alias(settings, PRODUCTION, version)
    loaded = load_production(settings)
    # then the model files are objects in the bucket and the model is base + layer
    artifacts = s3_server.bucket_dir / "registry-test" / "mlflow"
    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"layer.safetensors", "config.json", "MLmodel", "request_ids.json"} <= stored
    assert loaded.generate(PROMPTS) == _direct(folders.base, folders.layer)
    assert version_tags(settings, version)["covered_request_ids"] == "req-1"
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == endpoint  # restored, not cleared


def _stored_bytes(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


def _check_deleted_and_record_kept(settings, request_run, batch_run, folders, stored_root):
    """The request run's files and the batch run's fusion state are gone from the store
    (no stored file holds their bytes), the records and the other files stay."""
    layer_bytes = (folders.layer / "layer.safetensors").read_bytes()
    stats_bytes = (folders.layer / "fusion_stats.safetensors").read_bytes()
    assert layer_bytes in _stored_bytes(stored_root)  # before: in the store
    # when the request run's artifacts and the batch run's fusion state are deleted
    found = {r.info.run_id for r in find_runs(settings, {"eul.request_id": "req-1"})}
    assert found == {request_run}
    deleted = delete_run_artifacts(settings, request_run)
    states = delete_run_artifacts(settings, batch_run, ["fusion_state"])
    # then no file is left under the request run, the batch keeps its other files
    assert deleted >= 5 and states >= 3
    assert _artifact_files(settings, request_run) == set()
    batch_files = _artifact_files(settings, batch_run)
    assert "request_ids.json" in batch_files
    assert not any(f.startswith("fusion_state/") for f in batch_files)
    stored = _stored_bytes(stored_root)
    assert layer_bytes not in stored and stats_bytes not in stored
    # and both runs are still there with their params, metrics and a tag saying so
    request = _client(settings).get_run(request_run)
    assert request.data.metrics["forget_acc"] == 0.25
    assert request.data.params["request_id"] == "req-1"
    assert request.data.tags[DELETED_PATHS_TAG] == "*" and request.data.tags[DELETED_AT_TAG]
    batch = _client(settings).get_run(batch_run)
    assert batch.data.tags[DELETED_PATHS_TAG] == "fusion_state"
    assert batch.data.metrics["test_acc"] == 0.7
    # and a rerun finds nothing left to delete
    assert delete_run_artifacts(settings, request_run) == 0
    assert delete_run_artifacts(settings, batch_run, ["fusion_state"]) == 0


def _runs_with_artifacts(settings, folders) -> tuple[str, str]:
    batch_run = log_batch_run(
        settings, "b-del", ["req-1"], {"test_acc": 0.7}, layer_dir=folders.fused,
        state_dir=folders.layer,
    )  # fmt: skip
    request_run = log_request_run(
        settings, "req-1", folders.layer, {"forget_acc": 0.25}, stats_dir=folders.layer,
        plots=[folders.plot], parent_run_id=batch_run,
    )  # fmt: skip
    return request_run, batch_run


def test_a_runs_artifacts_are_deleted_from_the_file_store_and_its_record_stays(store, folders):
    # given a request run with its layer, statistics and plots, and a batch run with a state
    # (in an artifact folder of their own: other tests' runs hold the same layer files)
    settings = replace(
        _settings(store, "delete-files"),
        artifact_location=store.settings.artifact_location.rstrip("/") + "-delete-files",
    )
    request_run, batch_run = _runs_with_artifacts(settings, folders)
    root = Path(_client(settings).get_run(request_run).info.artifact_uri.removeprefix("file://"))
    _check_deleted_and_record_kept(settings, request_run, batch_run, folders, root.parents[1])


def test_a_runs_artifacts_are_deleted_from_s3_and_its_record_stays(
    store, folders, s3_server, monkeypatch
):
    # given the same runs with their artifacts in an S3 bucket
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint)  # for the test's reads
    settings = TrackingSettings(
        tracking_uri=store.settings.tracking_uri,
        artifact_location=f"s3://{s3_server.bucket}/delete-test/mlflow",
        model_name="model-delete-s3",
        experiment="exp-delete-s3",
        s3_endpoint_url=s3_server.endpoint,
    )
    request_run, batch_run = _runs_with_artifacts(settings, folders)
    root = s3_server.bucket_dir / "delete-test" / "mlflow"
    _check_deleted_and_record_kept(settings, request_run, batch_run, folders, root)


def test_overlapping_blocks_in_threads_leave_no_tracking_uri_behind(tmp_path, monkeypatch):
    # given no tracking URI in the environment, and two tasks in threads using MLflow at once
    import threading

    from eul.stores.registry.settings import tracking as _mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = TrackingSettings(f"sqlite:///{tmp_path / 'm.db'}", str(tmp_path / "art"))
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with _mlflow(settings):
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with _mlflow(settings):
            second_in.set()
            first_out.wait(10)
            # when the first block has left, the second still works on its settings
            seen.append(os.environ.get("MLFLOW_TRACKING_URI"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == [settings.tracking_uri]
    # then, both blocks done, the environment is as it was: nothing leaks to later calls
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_registry_calls_leave_no_store_in_the_working_directory(
    store, folders, tmp_path, monkeypatch
):
    # given a working directory of its own, and MLflow told no tracking URI at all
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(None)
    assert not is_tracking_uri_set()
    settings = _settings(store, "cwd")
    # when runs are logged, a version registered, promoted, read back and loaded
    ensure_experiment(settings)
    run = log_batch_run(settings, "b-cwd", ["req-1"], {"test_acc": 0.5}, layer_dir=folders.layer)
    version = register_version(
        settings, run, folders.base, folders.layer, compliance_tags(["req-1"], 1, "h", GATES_OK)
    )
    set_alias(settings, PRODUCTION, version)
    assert get_alias_version(settings, PRODUCTION) == version
    assert covered_request_ids(version_tags(settings, version)) == ["req-1"]
    load_version(settings, PRODUCTION)
    # then MLflow is left as it was, told nothing, and the working directory holds no store
    assert not is_tracking_uri_set()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert sorted(p.name for p in work.iterdir()) == []


def test_registry_calls_put_back_a_tracking_uri_set_before(store, tmp_path, monkeypatch):
    # given MLflow pointed at another store by its caller
    import mlflow

    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(other)
    try:
        # when a registry call runs on the module's store
        assert get_alias_version(_settings(store, "put-back"), PRODUCTION) is None
        # then MLflow points where it pointed before, not at the working directory
        assert mlflow.get_tracking_uri() == other
    finally:
        mlflow.set_tracking_uri(None)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("field", ["tracking_uri", "artifact_location"])
def test_settings_without_a_store_are_refused(tmp_path, monkeypatch, field):
    # given no tracking URI (or artifact location): MLflow would take its default in ./
    monkeypatch.chdir(tmp_path)
    values = {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "artifact_location": "art"}
    values[field] = "  " if field == "artifact_location" else ""
    # then the settings are refused with what to set, before MLflow is touched
    with pytest.raises(RegistryError, match="no MLflow"):
        TrackingSettings(**values)
    assert list(tmp_path.iterdir()) == []
