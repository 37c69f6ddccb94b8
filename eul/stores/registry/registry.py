"""MLflow tracking and registry: a run per request and per batch, versions tied to the log.

What reaches MLflow is ids, counts, hashes, configs, metrics and model files. No function here
takes forget-set text, so none can log it. MLflow (and torch) are imported inside the
functions: `import eul`, and Prefect tasks that only build settings, stay light.

A registered version is an MLflow pyfunc model whose artifacts are the base model folder
(`TextModel.save`) and the fused unlearning layer folder; its tags tie it to the deletion log
(covered request ids, log sequence number and hash, data version, gate results). Stages are
deprecated in MLflow 3: the aliases `candidate` and `production` say what is proposed and
what is deployed, and tags `<alias>_since` / `<alias>_until` record when an alias moved,
which MLflow itself does not keep.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.runtime.environment import restore

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.pyfunc import PyFuncModel

    from eul.model.text_model import TextModel

CANDIDATE = "candidate"
PRODUCTION = "production"
MODEL_ARTIFACT = "model"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
BASE_ARTIFACT = "base"
LAYER_ARTIFACT = "layer"
TAGS_ARTIFACT = "tags"
# MLflow accepts model version tag values up to 100,000 characters; longer values (the
# covered request ids after some thousands of requests) go into a file of the model, and the
# tag holds a reference that `version_tags` resolves.
TAG_VALUE_LIMIT = 100_000
TAG_FILE_PREFIX = "@file:"
# model_versions.description is VARCHAR(5000) in MLflow's SQL schema.
DESCRIPTION_LIMIT = 5000
LISTED_IDS = 50
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL")
REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas")


class RegistryError(RuntimeError):
    """A registry state the caller can fix: no such alias, an experiment stored elsewhere."""


def _file_uri(location: str) -> str:
    """A plain path becomes an absolute file URI; URIs (file:, s3:, gs:, ...) pass through."""
    if "://" in location or location.startswith("file:"):
        return location
    return Path(location).resolve().as_uri()


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs, versions and artifacts go; relative paths are from the working directory.

    Holds no secret: S3 credentials are read by boto3 from AWS_* variables (or its config
    files) and never pass through here.
    """

    tracking_uri: str = "sqlite:///state/mlflow.db"
    artifact_location: str = "state/mlartifacts"
    model_name: str = "eul-model"
    experiment: str = "eul"
    s3_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifact_location", _file_uri(self.artifact_location))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrackingSettings:
        """MLFLOW_TRACKING_URI, EUL_MLFLOW_ARTIFACTS (a folder or s3://bucket/prefix),
        EUL_MLFLOW_MODEL, EUL_MLFLOW_EXPERIMENT, MLFLOW_S3_ENDPOINT_URL; unset means default."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or defaults.tracking_uri,
            artifact_location=env.get("EUL_MLFLOW_ARTIFACTS") or defaults.artifact_location,
            model_name=env.get("EUL_MLFLOW_MODEL") or defaults.model_name,
            experiment=env.get("EUL_MLFLOW_EXPERIMENT") or defaults.experiment,
            s3_endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or None,
        )


def _sqlite_folder(tracking_uri: str) -> None:
    """SQLite cannot create the folder of its database file: make it."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and ":memory:" not in tracking_uri:
        Path(tracking_uri[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


# MLflow's tracking URI and the env variables are process-wide: blocks that overlap (tasks
# in threads) set them on entry, and the last block to leave puts back what the first found.
_STATE_LOCK = threading.Lock()
_state: dict[str, Any] = {"depth": 0, "saved_env": {}, "saved_uris": ("", "")}


@contextmanager
def _mlflow(settings: TrackingSettings) -> Iterator[MlflowClient]:
    """A client on `settings`; MLflow's fluent calls inside (log_model, load_model) use them too.

    MLflow keeps the tracking URI in a process global and in MLFLOW_TRACKING_URI, and reads the
    S3 endpoint from MLFLOW_S3_ENDPOINT_URL: all are set for the block and put back after the
    last overlapping block. Threads may overlap with the same settings, not with different ones.
    """
    import mlflow

    _sqlite_folder(settings.tracking_uri)
    with _STATE_LOCK:
        if _state["depth"] == 0:
            _state["saved_env"] = {name: os.environ.get(name) for name in MLFLOW_ENV}
            _state["saved_uris"] = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        _state["depth"] += 1
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.tracking_uri)
        if settings.s3_endpoint_url:
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    try:
        yield mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    finally:
        with _STATE_LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                mlflow.set_tracking_uri(_state["saved_uris"][0])
                mlflow.set_registry_uri(_state["saved_uris"][1])
                restore(_state["saved_env"])


# -- experiments and runs -------------------------------------------------------------------


def _experiment_id(client: MlflowClient, settings: TrackingSettings, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=settings.artifact_location)
        except MlflowException as err:  # created by a parallel task in the meantime
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "active":
        raise RegistryError(
            f"experiment {name!r} is deleted in {settings.tracking_uri}: restore it "
            "or choose another name (EUL_MLFLOW_EXPERIMENT)"
        )
    if experiment.artifact_location.rstrip("/") != settings.artifact_location.rstrip("/"):
        raise RegistryError(
            f"experiment {name!r} keeps its artifacts at {experiment.artifact_location}, "
            f"not {settings.artifact_location}: an experiment's artifact location is fixed, "
            "so choose another experiment name (EUL_MLFLOW_EXPERIMENT) or that location"
        )
    return experiment.experiment_id


def ensure_experiment(settings: TrackingSettings, name: str | None = None) -> str:
    """The id of experiment `name` (default: settings.experiment), created if missing.

    Created with an explicit artifact location: without one MLflow would put artifacts in
    ./mlruns of whatever the working directory is.
    """
    with _mlflow(settings) as client:
        return _experiment_id(client, settings, name or settings.experiment)


def flatten_params(values: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """A config (dataclass or mapping, nested) as flat MLflow params: {"layer.width": "32"}."""
    if is_dataclass(values) and not isinstance(values, type):
        values = asdict(values)
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _metric_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics must be numbers (NaN is kept: MLflow stores it); anything else is a bug."""
    values: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(value, numbers.Real):
            raise TypeError(f"metric {key!r} is a {type(value).__name__}, not a number")
        values[key] = float(value)
    return values


def _log_run(
    client: MlflowClient,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    folders: Mapping[str, str | Path | None],
    files: Sequence[tuple[str, str | Path]],
    documents: Mapping[str, Any],
) -> str:
    """One finished run: params, metrics, folders and files as artifacts, JSON documents.

    folders: {artifact folder: local folder}; files: (artifact folder, local file);
    documents: {file name: JSON-able value}. A failure marks the run FAILED and re-raises.
    """
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
    try:
        param_list = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(param_list), 100):  # MLflow's per-request limit
            client.log_batch(run_id, params=param_list[start : start + 100])
        now = int(time.time() * 1000)
        metric_list = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for start in range(0, len(metric_list), 1000):
            client.log_batch(run_id, metrics=metric_list[start : start + 1000])
        for artifact_folder, local in folders.items():
            if local is not None:
                client.log_artifacts(run_id, str(local), artifact_folder)
        for artifact_folder, local in files:
            client.log_artifact(run_id, str(local), artifact_folder)
        with tempfile.TemporaryDirectory(prefix="eul-run-") as tmp:
            for name, value in documents.items():
                path = Path(tmp) / name
                path.write_text(json.dumps(value, indent=2, default=float) + "\n")
                client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _check_folder(folder: str | Path | None, what: str) -> None:
    if folder is not None and not Path(folder).is_dir():
        raise FileNotFoundError(f"no {what} folder at {folder}")


def log_request_run(
    settings: TrackingSettings,
    request_id: str,
    layer_dir: str | Path,
    metrics: Mapping[str, float],
    *,
    layer_config: Any = None,
    eul_config: Any = None,
    params: Mapping[str, Any] | None = None,
    stats_dir: str | Path | None = None,
    evaluation: Any = None,
    plots: Sequence[str | Path] = (),
    batch_id: str | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Log one request's unlearning update as a finished run; returns its run id.

    Params: the request id, `layer_config` (as layer.*), `eul_config` (as eul.*) and `params`
    (counts, timings: never record text). Metrics: the evaluation dict. Artifacts: the layer
    folder (layer/), its fusion statistics (fusion_stats/), evaluation.json (`evaluation`, or
    the metrics: aggregates only, never per-record outputs) and plots (plots/).
    `parent_run_id` nests the run under a batch run.
    """
    _check_folder(layer_dir, "unlearning layer")
    _check_folder(stats_dir, "fusion statistics")
    all_params = {"request_id": request_id}
    if layer_config is not None:
        all_params.update(flatten_params(layer_config, "layer."))
    if eul_config is not None:
        all_params.update(flatten_params(eul_config, "eul."))
    all_params.update(flatten_params(params or {}))
    tags = {"eul.kind": "request", "eul.request_id": request_id}
    if batch_id is not None:
        tags["eul.batch_id"] = batch_id
    if parent_run_id is not None:
        tags["mlflow.parentRunId"] = parent_run_id
    with _mlflow(settings) as client:
        return _log_run(
            client,
            _experiment_id(client, settings, settings.experiment),
            f"request-{request_id}",
            tags,
            all_params,
            _metric_values(metrics),
            {"layer": layer_dir, "fusion_stats": stats_dir},
            [("plots", p) for p in plots],
            {"evaluation.json": dict(metrics) if evaluation is None else evaluation},
        )


def log_batch_run(
    settings: TrackingSettings,
    batch_id: str,
    request_ids: Sequence[str],
    metrics: Mapping[str, float],
    *,
    params: Mapping[str, Any] | None = None,
    layer_dir: str | Path | None = None,
    state_dir: str | Path | None = None,
    evaluation: Any = None,
    plots: Sequence[str | Path] = (),
) -> str:
    """Log one nightly batch as a finished run; returns its run id (register_version's input).

    Params: batch id, request count and `params`. Artifacts: request_ids.json, the fused
    layer (fused_layer/), the fusion state (fusion_state/), evaluation.json and plots.
    """
    _check_folder(layer_dir, "fused layer")
    _check_folder(state_dir, "fusion state")
    all_params = {"batch_id": batch_id, "request_count": str(len(request_ids))}
    all_params.update(flatten_params(params or {}))
    with _mlflow(settings) as client:
        return _log_run(
            client,
            _experiment_id(client, settings, settings.experiment),
            f"batch-{batch_id}",
            {"eul.kind": "batch", "eul.batch_id": batch_id},
            all_params,
            _metric_values(metrics),
            {"fused_layer": layer_dir, "fusion_state": state_dir},
            [("plots", p) for p in plots],
            {
                "request_ids.json": list(request_ids),
                "evaluation.json": dict(metrics) if evaluation is None else evaluation,
            },
        )


# -- what a version records -----------------------------------------------------------------


def _gates_passed(gates: Mapping[str, Mapping[str, Any]]) -> bool:
    """All gates passed; no gate at all counts as not passed (nothing was checked)."""
    for name, gate in gates.items():
        if not isinstance(gate.get("passed"), bool):
            raise ValueError(f"gate {name!r} has no boolean 'passed'")
    return bool(gates) and all(gate["passed"] for gate in gates.values())


def ids_digest(request_ids: Sequence[str]) -> str:
    """sha256 of the sorted ids, one a line: checks a list against a version without the list."""
    return hashlib.sha256("\n".join(sorted(request_ids)).encode("utf-8")).hexdigest()


def compliance_tags(
    covered_request_ids: Sequence[str],
    log_seq: int,
    log_hash: str,
    gates: Mapping[str, Mapping[str, Any]],
    data_dvc_md5: str | None = None,
) -> dict[str, str]:
    """The tags tying a version to the deletion log.

    covered_request_ids: every request the version honours (not only this batch's), sorted,
    comma-separated, with their count and sha256; log_seq/log_hash: the log entry the batch
    was cut at; data_dvc_md5: the data version; gates: {name: {"passed": bool, ...}} as JSON,
    and gates_passed "true"/"false".
    """
    ids = sorted(set(covered_request_ids))
    with_comma = [i for i in ids if "," in i]
    if with_comma:
        raise ValueError(f"request ids may not contain commas: {with_comma[0]!r}")
    tags = {
        "covered_request_ids": ",".join(ids),
        "covered_request_count": str(len(ids)),
        "covered_request_ids_sha256": ids_digest(ids),
        "log_seq": str(int(log_seq)),
        "log_hash": log_hash,
        "gates": json.dumps(gates, sort_keys=True, default=float),
        "gates_passed": "true" if _gates_passed(gates) else "false",
    }
    if data_dvc_md5 is not None:
        tags["data_dvc_md5"] = data_dvc_md5
    return tags


def covered_request_ids(tags: Mapping[str, str]) -> list[str]:
    """The request ids a version honours, from its (resolved) tags."""
    value = tags.get("covered_request_ids", "")
    return [i for i in value.split(",") if i]


def _number(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return "nan" if math.isnan(value) else f"{float(value):.4f}"
    return str(value)


def version_description(
    request_ids: Sequence[str],
    metrics: Mapping[str, float],
    *,
    covered_count: int | None = None,
    production_metrics: Mapping[str, float] | None = None,
    production_version: int | None = None,
    gates: Mapping[str, Mapping[str, Any]] | None = None,
    log_seq: int | None = None,
) -> str:
    """Markdown for a reviewer: what this version forgets, its gates, metrics vs production.

    `request_ids` are the requests new in this batch; the full list is in the tags.
    """
    ids = list(request_ids)
    lines = [f"Forgets {len(ids)} new deletion request(s)"]
    if covered_count is not None:
        lines[0] += f", {covered_count} in all"
    if log_seq is not None:
        lines[0] += f", deletion log cut at sequence {log_seq}"
    lines[0] += "."
    shown = ", ".join(ids[:LISTED_IDS])
    more = f" and {len(ids) - LISTED_IDS} more" if len(ids) > LISTED_IDS else ""
    lines += ["", f"New requests: {shown or 'none'}{more} (all ids: tag covered_request_ids)."]
    if gates is not None:
        verdict = "PASSED" if _gates_passed(gates) else "FAILED"
        lines += ["", f"Gates: {verdict}", ""]
        for name, gate in gates.items():
            detail = ", ".join(f"{k} {_number(v)}" for k, v in gate.items() if k != "passed")
            mark = "pass" if gate["passed"] else "FAIL"
            lines.append(f"- {name}: {mark}" + (f" ({detail})" if detail else ""))
    against = "production"
    if production_version is not None:
        against += f" (version {production_version})"
    lines += ["", f"| metric | this version | {against} | change |", "|---|---|---|---|"]
    previous = production_metrics or {}
    for key, value in metrics.items():
        old = previous.get(key)
        change = _number(value - old) if old is not None else ""
        old_text = _number(old) if old is not None else "-"
        lines.append(f"| {key} | {_number(value)} | {old_text} | {change} |")
    text = "\n".join(lines)
    if len(text) > DESCRIPTION_LIMIT:
        cut = "\n... (cut to MLflow's description limit; see the batch run)"
        text = text[: DESCRIPTION_LIMIT - len(cut)] + cut
    return text


# -- registering and loading versions -------------------------------------------------------


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link where possible: staging a large base model should not copy it twice."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _requirements() -> list[str]:
    """Pins of what loading the model imports (the `eul` package itself must be installed)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name,
            description=(
                "A text model kept compliant with a log of data-deletion requests. Each "
                "version is the base model plus one fused unlearning layer; its tags name "
                "the requests it honours. Alias 'production' is what is deployed."
            ),
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register_version(
    settings: TrackingSettings,
    run_id: str,
    model_dir: str | Path,
    layer_dir: str | Path,
    tags: Mapping[str, str],
    description: str = "",
) -> int:
    """Log base model + fused layer as a pyfunc model of run `run_id` and register it.

    Returns the new version number. `tags` usually come from `compliance_tags`; a value
    longer than MLflow allows is stored as a file of the model and resolved by `version_tags`.
    """
    import mlflow

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"no base model at {model_dir}: expected a folder with config.json")
    _layer_file(layer_dir)
    with _mlflow(settings) as client, tempfile.TemporaryDirectory(prefix="eul-stage-") as tmp:
        staged = Path(tmp)
        shutil.copytree(model_dir, staged / BASE_ARTIFACT, copy_function=_link_or_copy)
        shutil.copytree(layer_dir, staged / LAYER_ARTIFACT, copy_function=_link_or_copy)
        artifacts = {name: str(staged / name) for name in (BASE_ARTIFACT, LAYER_ARTIFACT)}
        short_tags: dict[str, str] = {}
        for key, value in tags.items():
            if len(value) <= TAG_VALUE_LIMIT:
                short_tags[key] = value
                continue
            (staged / TAGS_ARTIFACT).mkdir(exist_ok=True)
            (staged / TAGS_ARTIFACT / f"{key}.txt").write_text(value)
            artifacts[TAGS_ARTIFACT] = str(staged / TAGS_ARTIFACT)
            short_tags[key] = f"{TAG_FILE_PREFIX}{TAGS_ARTIFACT}/{key}.txt"
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(MODEL_CODE),
                artifacts=artifacts,
                pip_requirements=_requirements(),
            )
        _ensure_registered_model(client, settings.model_name)
        version = client.create_model_version(
            settings.model_name,
            source=info.model_uri,
            run_id=run_id,
            tags=short_tags,
            description=description[:DESCRIPTION_LIMIT],
            model_id=info.model_id,
        )
        return int(version.version)


def _alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else int(version)


def get_alias_version(settings: TrackingSettings, alias: str) -> int | None:
    """The version `alias` points at; None when the alias (or the model) does not exist."""
    with _mlflow(settings) as client:
        return _alias_version(client, settings.model_name, alias)


def set_alias(settings: TrackingSettings, alias: str, version: int) -> None:
    """Point `alias` at `version`, tagging it `<alias>_since` and the previous one
    `<alias>_until` (UTC, ISO 8601): the registry keeps no history of alias moves."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    name = settings.model_name
    with _mlflow(settings) as client:
        previous = _alias_version(client, name, alias)
        client.get_model_version(name, str(version))  # fails clearly if there is no such version
        client.set_registered_model_alias(name, alias, str(version))
        if previous != version:
            client.set_model_version_tag(name, str(version), f"{alias}_since", now)
            if previous is not None:
                client.set_model_version_tag(name, str(previous), f"{alias}_until", now)


def set_version_tags(settings: TrackingSettings, version: int, tags: Mapping[str, str]) -> None:
    """Add or overwrite tags of a version (who promoted it, a reviewer's override reason)."""
    with _mlflow(settings) as client:
        for key, value in tags.items():
            client.set_model_version_tag(settings.model_name, str(version), key, value)


def find_versions(settings: TrackingSettings, tag: str, value: str) -> list[int]:
    """Versions of the model whose tag `tag` equals `value`, oldest first; [] if none.

    The pipeline tags each version with a key of what it was built from, so that a rerun
    finds the version an interrupted run already registered instead of adding another.
    """
    from mlflow.exceptions import MlflowException

    if "'" in value or "`" in tag:
        raise ValueError("tag names and values searched for may not hold quotes")
    query = f"name='{settings.model_name}' and tags.`{tag}`='{value}'"
    with _mlflow(settings) as client:
        try:
            found = client.search_model_versions(query)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
    return sorted(int(v.version) for v in found)


def version_exists(settings: TrackingSettings, version: int) -> bool:
    """Whether the registered model has this version (checked before a flow starts work)."""
    from mlflow.exceptions import MlflowException

    with _mlflow(settings) as client:
        try:
            client.get_model_version(settings.model_name, str(version))
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
    return True


def version_run_id(settings: TrackingSettings, version: int) -> str:
    """The run a version was logged from (the batch run, with the fusion state)."""
    with _mlflow(settings) as client:
        run_id = client.get_model_version(settings.model_name, str(version)).run_id
    if not run_id:
        raise RegistryError(f"version {version} of {settings.model_name!r} names no run")
    return run_id


def version_artifact_links(
    settings: TrackingSettings, version: int, folder: str = "plots"
) -> list[dict[str, str]]:
    """The files under `folder` of the run a version was logged from, each as its name, its
    `runs:/` URI (what `mlflow artifacts download -u` takes) and its location in the
    artifact store (a file: or s3: URI): the links a report gives to the batch's plots."""
    run_id = version_run_id(settings, version)
    with _mlflow(settings) as client:
        base = client.get_run(run_id).info.artifact_uri.rstrip("/")
        files = [a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir]
    return [
        {"name": Path(path).name, "uri": f"runs:/{run_id}/{path}", "location": f"{base}/{path}"}
        for path in sorted(files)
    ]


def download_run_artifacts(
    settings: TrackingSettings, run_id: str, artifact_path: str, dst: str | Path
) -> Path:
    """Download one artifact folder of a run (e.g. `fusion_state`) into `dst`."""
    import mlflow

    Path(dst).mkdir(parents=True, exist_ok=True)
    with _mlflow(settings):
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=str(dst),
            tracking_uri=settings.tracking_uri,
        )
    return Path(local)


def _model_uri(settings: TrackingSettings, version: int) -> str:
    return f"models:/{settings.model_name}/{version}"


def version_tags(settings: TrackingSettings, version: int) -> dict[str, str]:
    """A version's tags, with values stored as files of the model read back in."""
    import mlflow

    with _mlflow(settings) as client:
        model_version = client.get_model_version(settings.model_name, str(version))
        tags = dict(model_version.tags)
        for key, value in list(tags.items()):
            if value.startswith(TAG_FILE_PREFIX):
                location = client.get_model_version_download_uri(settings.model_name, str(version))
                uri = f"{location.rstrip('/')}/artifacts/{value[len(TAG_FILE_PREFIX) :]}"
                with tempfile.TemporaryDirectory(prefix="eul-tag-") as tmp:
                    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
                    tags[key] = Path(local).read_text()
        return tags


def _resolve(settings: TrackingSettings, version: int | str) -> int:
    """A version number, or the version an alias points at."""
    if isinstance(version, int):
        return version
    found = get_alias_version(settings, version)
    if found is None:
        raise RegistryError(
            f"no version of {settings.model_name!r} has the alias {version!r} "
            f"in {settings.tracking_uri}"
        )
    return found


def download_version(
    settings: TrackingSettings, version: int | str, dst: str | Path
) -> tuple[Path, Path]:
    """Download a version (number or alias) into `dst`; returns (base model, layer) folders."""
    import mlflow
    from mlflow.models import Model

    number = _resolve(settings, version)
    with _mlflow(settings):
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=_model_uri(settings, number),
                dst_path=str(dst),
                tracking_uri=settings.tracking_uri,
                registry_uri=settings.tracking_uri,
            )
        )
    paths = Model.load(str(local)).flavors["python_function"]["artifacts"]
    return local / paths[BASE_ARTIFACT]["path"], local / paths[LAYER_ARTIFACT]["path"]


def _layer_file(folder: str | Path) -> str:
    """Which kind of layer a folder holds: a saved unlearning layer or a fused linear map."""
    from eul.fusion.fuse import FUSED_FILE
    from eul.layers.model import WEIGHTS_FILE

    for name in (WEIGHTS_FILE, FUSED_FILE):
        if (Path(folder) / name).is_file():
            return name
    raise FileNotFoundError(
        f"no unlearning layer in {folder}: expected {WEIGHTS_FILE} (save_layer) "
        f"or {FUSED_FILE} (save_fused)"
    )


def load_model_folders(base_dir: str | Path, layer_dir: str | Path) -> TextModel:
    """The base model with the layer in `layer_dir` loaded and switched on."""
    from eul.fusion.fuse import FUSED_FILE, add_fused_layer, load_fused
    from eul.model.text_model import TextModel

    tm = TextModel.load(base_dir)
    layers = tm.unlearning_layers()
    if _layer_file(layer_dir) == FUSED_FILE:
        name = "fused"
        add_fused_layer(layers, name, load_fused(layer_dir))
    else:
        name = layers.load_layer(layer_dir)
    layers.set_active([name])
    return tm


def load_version(settings: TrackingSettings, version: int | str = PRODUCTION) -> TextModel:
    """A registered version (number or alias) as a TextModel with its fused layer active."""
    with tempfile.TemporaryDirectory(prefix="eul-model-") as tmp:
        base, layer = download_version(settings, version, tmp)
        return load_model_folders(base, layer)


def load_production(settings: TrackingSettings) -> TextModel:
    """What is deployed: the version with the production alias, fused layer active."""
    return load_version(settings, PRODUCTION)


def load_pyfunc(settings: TrackingSettings, version: int | str = PRODUCTION) -> PyFuncModel:
    """A version as MLflow serves it: `predict(texts)` returns greedy outputs."""
    import mlflow

    number = _resolve(settings, version)
    with _mlflow(settings):
        return mlflow.pyfunc.load_model(_model_uri(settings, number))
