"""MLflow runs: one per deletion request and one per nightly batch, with their artifacts.

A run records params (ids, counts, configs), metrics, the layer and fusion folders, plots and
JSON documents; never record text.
"""

from __future__ import annotations

import json
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.runtime.scratch import scratch_folder
from eul.stores.registry.settings import RegistryError, TrackingSettings, tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

# The tags a run is found by on a rerun (`_log_run`'s `key_tag`): a request's run by the key
# of its layer (request id and layer checksum), a batch's run by the batch key (the tag its
# registered version carries too).
REQUEST_KEY_TAG = "eul.request_key"
# Set on a request's earlier run once a rebuilt layer (its folder deleted, say after a
# corruption was refused) logged a new one: one live run per request, the history kept.
SUPERSEDED_TAG = "eul.superseded_by"
BATCH_KEY_TAG = "eul.batch_key"
# What a run is (its role): one request's layer, or a batch's fused candidate. `eul.kind`
# says which kind of batch (nightly, request, compaction), as on the version.
RUN_ROLE_TAG = "eul.run"


@dataclass(frozen=True)
class DataVersion:
    """The data a run was built from, as an MLflow dataset input: the DVC-tracked folder's
    md5 (ids and hashes only, never rows)."""

    name: str
    md5: str
    source: str


@dataclass(frozen=True)
class RunStory:
    """What a run says beyond its numbers: a sentence, when its work really ran (Unix
    seconds; runs are logged once the work is done), the code and the data it came from."""

    description: str = ""
    started: float | None = None
    ended: float | None = None
    commit: str | None = None
    data: DataVersion | None = None

    def tags(self) -> dict[str, str]:
        tags = {}
        if self.description:
            tags["mlflow.note.content"] = self.description
        if self.commit:
            tags["mlflow.source.git.commit"] = self.commit
        return tags


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
            f"experiment {name!r} is deleted in {settings.shown_uri}: restore it "
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
    with tracking(settings) as client:
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


def _keyed_run(client: MlflowClient, experiment_id: str, tag: str, key: str) -> Run | None:
    """The run an earlier try logged under `tag` = `key`: a finished one first, else the
    oldest (a try killed while it logged, or one that failed); None when there is none."""
    from mlflow.entities import RunStatus

    if "'" in key or "`" in tag:
        raise ValueError("run keys may not hold quotes")
    found = client.search_runs(
        [experiment_id], f"tags.`{tag}` = '{key}'", order_by=["attributes.start_time ASC"]
    )
    finished = [r for r in found if r.info.status == RunStatus.to_string(RunStatus.FINISHED)]
    return (finished or list(found) or [None])[0]


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
    key_tag: str | None = None,
    story: RunStory | None = None,
) -> str:
    """One finished run: params, metrics, folders and files as artifacts, JSON documents;
    with `story`, its description, source commit, data input and real start and end times.

    folders: {artifact folder: local folder}; files: (artifact folder, local file);
    documents: {file name: JSON-able value}. A failure marks the run FAILED and re-raises.
    With `key_tag` (a tag in `tags`) the run is found or created by that tag's value: a
    finished run with the key is returned as it is, and an unfinished one (a try killed
    while it logged) is logged into again and finished, so a rerun never adds a second run.
    """
    from mlflow.entities import Metric, Param

    story = story or RunStory()
    run = None if key_tag is None else _keyed_run(client, experiment_id, key_tag, tags[key_tag])
    if run is not None and run.info.status == "FINISHED":
        return run.info.run_id
    started = None if story.started is None else int(story.started * 1000)
    if run is None:
        run = client.create_run(
            experiment_id, start_time=started, run_name=run_name, tags={**tags, **story.tags()}
        )
        logged_params: dict[str, str] = {}
        logged_metrics: dict[str, float] = {}
    else:
        client.update_run(run.info.run_id, "RUNNING")
        logged_params, logged_metrics = run.data.params, run.data.metrics
    run_id = run.info.run_id
    try:
        # what a killed try already logged is not logged again (a param cannot change)
        param_list = [Param(k, v) for k, v in params.items() if k not in logged_params]
        for start in range(0, len(param_list), 100):  # MLflow's per-request limit
            client.log_batch(run_id, params=param_list[start : start + 100])
        now = int(time.time() * 1000)
        metric_list = [Metric(k, v, now, 0) for k, v in metrics.items() if k not in logged_metrics]
        for start in range(0, len(metric_list), 1000):
            client.log_batch(run_id, metrics=metric_list[start : start + 1000])
        if story.data is not None and not run.inputs.dataset_inputs:
            client.log_inputs(run_id, [_dataset_input(story.data)])
        for artifact_folder, local in folders.items():
            if local is not None:
                client.log_artifacts(run_id, str(local), artifact_folder)
        for artifact_folder, local in files:
            client.log_artifact(run_id, str(local), artifact_folder)
        with scratch_folder("run") as tmp:
            for name, value in documents.items():
                path = Path(tmp) / name
                path.write_text(json.dumps(value, indent=2, default=float) + "\n")
                client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    ended = None if story.ended is None else int(story.ended * 1000)
    client.set_terminated(run_id, "FINISHED", end_time=ended)
    return run_id


def _dataset_input(data: DataVersion):
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=data.name,
        digest=data.md5[:36],
        source_type="dvc",
        source=json.dumps({"dvc_file": data.source, "md5": data.md5}),
        profile=json.dumps({"md5": data.md5}),
    )
    return DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])


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
    key: str | None = None,
    story: RunStory | None = None,
) -> str:
    """Log one request's unlearning update as a finished run; returns its run id.

    Params: the request id, `layer_config` (as layer.*), `eul_config` (as eul.*) and `params`
    (counts, timings: never record text). Metrics: the evaluation dict. Artifacts: the layer
    folder (layer/), its fusion statistics (fusion_stats/), evaluation.json (`evaluation`, or
    the metrics: aggregates only, never per-record outputs) and plots (plots/).
    `parent_run_id` nests the run under a batch run. `key` (tag `eul.request_key`): a run
    an earlier try logged with the same key is found and reused instead of a second one.
    """
    _check_folder(layer_dir, "unlearning layer")
    _check_folder(stats_dir, "fusion statistics")
    all_params = {"request_id": request_id}
    if layer_config is not None:
        all_params.update(flatten_params(layer_config, "layer."))
    if eul_config is not None:
        all_params.update(flatten_params(eul_config, "eul."))
    all_params.update(flatten_params(params or {}))
    tags = {"eul.kind": "request", RUN_ROLE_TAG: "request", "eul.request_id": request_id}
    if batch_id is not None:
        tags["eul.batch_id"] = batch_id
    if parent_run_id is not None:
        tags["mlflow.parentRunId"] = parent_run_id
    if key is not None:
        tags[REQUEST_KEY_TAG] = key
    with tracking(settings) as client:
        run_id = _log_run(
            client,
            _experiment_id(client, settings, settings.experiment),
            f"request-{request_id}",
            tags,
            all_params,
            _metric_values(metrics),
            {"layer": layer_dir, "fusion_stats": stats_dir},
            [("plots", p) for p in plots],
            {"evaluation.json": dict(metrics) if evaluation is None else evaluation},
            key_tag=REQUEST_KEY_TAG if key is not None else None,
            story=story,
        )
        _supersede_earlier(client, run_id, request_id)
        return run_id


def _supersede_earlier(client: MlflowClient, run_id: str, request_id: str) -> None:
    """Tag the request's other runs (a layer built before this one) as superseded by
    `run_id`, so that exactly one run per request is live."""
    if "'" in request_id:
        raise ValueError("request ids may not hold quotes")
    experiment_id = client.get_run(run_id).info.experiment_id
    earlier = client.search_runs(
        [experiment_id],
        f"tags.`eul.kind` = 'request' and tags.`eul.request_id` = '{request_id}'",
    )
    for run in earlier:
        if run.info.run_id != run_id and SUPERSEDED_TAG not in run.data.tags:
            client.set_tag(run.info.run_id, SUPERSEDED_TAG, run_id)


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
    key: str | None = None,
    kind: str = "nightly",
    story: RunStory | None = None,
) -> str:
    """Log one batch as a finished run; returns its run id (register_version's input).

    Params: batch id, request count and `params`. Artifacts: request_ids.json, the fused
    layer (fused_layer/), the fusion state (fusion_state/), evaluation.json and plots.
    `key` (tag `eul.batch_key`): the run an earlier try of the same batch logged is reused.
    """
    _check_folder(layer_dir, "fused layer")
    _check_folder(state_dir, "fusion state")
    all_params = {"batch_id": batch_id, "request_count": str(len(request_ids))}
    all_params.update(flatten_params(params or {}))
    tags = {"eul.kind": kind, RUN_ROLE_TAG: "batch", "eul.batch_id": batch_id}
    if key is not None:
        tags[BATCH_KEY_TAG] = key
    with tracking(settings) as client:
        return _log_run(
            client,
            _experiment_id(client, settings, settings.experiment),
            f"batch-{batch_id}",
            tags,
            all_params,
            _metric_values(metrics),
            {"fused_layer": layer_dir, "fusion_state": state_dir},
            [("plots", p) for p in plots],
            {
                "request_ids.json": list(request_ids),
                "evaluation.json": dict(metrics) if evaluation is None else evaluation,
            },
            key_tag=BATCH_KEY_TAG if key is not None else None,
            story=story,
        )


def download_run_artifacts(
    settings: TrackingSettings, run_id: str, artifact_path: str, dst: str | Path
) -> Path:
    """Download one artifact folder of a run (e.g. `fusion_state`) into `dst`."""
    import mlflow

    Path(dst).mkdir(parents=True, exist_ok=True)
    with tracking(settings):
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=str(dst),
            tracking_uri=settings.tracking_uri,
        )
    return Path(local)


def page_base(url: str) -> str | None:
    """The web address of a tracking server (`http(s)://host:port/path`, any user or password
    left out: a link is shown to people), or None where the store is not a server."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def run_links(settings: TrackingSettings, run_id: str) -> dict[str, str]:
    """Where a reviewer finds a run and its plots: pages of the MLflow UI where the tracking
    store is a server, else the run id and the plots' folder as plain paths."""
    from urllib.parse import unquote, urlsplit

    with tracking(settings) as client:
        info = client.get_run(run_id).info
    base = page_base(settings.tracking_uri)
    if base is not None:
        page = f"{base}/#/experiments/{info.experiment_id}/runs/{run_id}"
        return {"batch run": page, "plots": f"{page}/artifacts/plots"}
    artifacts = info.artifact_uri.rstrip("/")
    if artifacts.startswith("file:"):
        artifacts = unquote(urlsplit(artifacts).path)
    return {
        "batch run": f"run {run_id} in {settings.shown_uri}",
        "plots": f"{artifacts}/plots",
    }
