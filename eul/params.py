"""Typed access to params.yaml, the one file that holds every knob of the pipeline.

DVC tracks the sections each stage reads, so a changed knob reruns exactly the stages it
affects. Absent keys take the defaults below (they match the defaults of `eul train` and of
`EULConfig`); unknown keys and wrong types are errors, because a misspelt knob that silently
falls back to its default is worse than a run that stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eul.model.device import DEVICE_PATTERN

if TYPE_CHECKING:
    from eul.methods.eul import EULConfig
    from eul.model.text_model import ModelSpec
    from eul.model.training import TrainConfig

DEFAULT_PATH = "params.yaml"
# The named points where a failure drill (`pipeline.drill_fail_at`) stops a batch, in the
# order a batch reaches them. Each sits between two effects a kill could separate:
# - training a request's layer: before its done.json (layer and statistics written, not yet
#   moved into place), after it (before the request's MLflow run), after the run is logged
#   (before the log's `unlearned` mark);
# - registration: before the version is registered (the batch run logged), between the
#   registered version and its `candidate` alias, after registration (before promotion);
# - promotion: before the production alias moves, after it moved (before the log's
#   `deployed` marks), after promotion (before the purge);
# - the purge: after its intent record (nothing changed yet), after the raw data file was
#   rewritten (before `dvc add`), after `dvc add` (before the rebuild and the sweeps), before
#   its completion record, after it (before the log's `purged` marks).
DrillPoint = Literal[
    "before-done",
    "after-done",
    "after-run-logged",
    "before-register",
    "after-register-before-alias",
    "after-register",
    "before-alias",
    "after-alias",
    "after-promote",
    "after-purge-intent",
    "after-raw-rewrite",
    "after-dvc-add",
    "before-purge-record",
    "after-purge",
]


class ParamsError(ValueError):
    """params.yaml cannot be used; the message names the file, the key and the problem."""


class _Section(BaseModel):
    # strict: "3" is not an int and true is not a number; unknown keys are refused.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataParams(_Section):
    """The raw data set tracked by data.dvc; `eul data init` regenerates the embedded one."""

    task: Literal["classification", "generation"] = "classification"
    n_subjects: int = Field(400, ge=1)
    records_per_subject: list[int] = Field(default_factory=lambda: [3, 12])
    memorised_share: float = Field(0.02, ge=0.0, le=1.0)
    seed: int = 0
    raw: str = "data/raw"
    records_file: str = "records.jsonl"
    dvc_file: str = "data.dvc"

    @field_validator("records_per_subject")
    @classmethod
    def _low_high(cls, value: list[int]) -> list[int]:
        if len(value) != 2 or not 1 <= value[0] <= value[1]:
            raise ValueError("must be [low, high] with 1 <= low <= high")
        return value


class PrepareParams(_Section):
    """Subject-wise split of the raw data and the tokenizer (stage `prepare`)."""

    test_share: float = Field(0.1, ge=0.0, lt=1.0)
    heldout_share: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0
    out: str = "data/prepared"


class ModelParams(_Section):
    """Size of the base model built from scratch (stage `train`); `eul train` defaults."""

    family: Literal["t5", "gpt2"] = "t5"
    vocab_size: int = Field(4000, ge=1)
    d_model: int = Field(128, ge=1)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    d_ff: int = Field(512, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    max_input_len: int = Field(64, ge=1)
    max_target_len: int = Field(8, ge=1)


class TrainParams(_Section):
    """Full training of the base model (stage `train`); `eul train` defaults.

    `threads` is torch's CPU thread count (0: torch's default). One thread makes the same
    data give the same model bytes, so `dvc repro` output is reproducible, and a small
    model trains no slower: on 2 busy cores, two threads ran 8x slower per step than one.
    `init` names a Hugging Face checkpoint folder (seq2seq or causal LM, with its tokenizer)
    to fine-tune instead of the small T5 built from `model`; `epochs` may then be small.
    `device` (auto, cpu, cuda, cuda:N, mps) is where the base model and the compaction
    retrain train; auto takes a GPU where there is one. A GPU does not give the CPU's bytes.
    """

    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    warmup_share: float = Field(0.06, ge=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    seed: int = 0
    threads: int = Field(1, ge=0)
    out: str = "models/base"
    init: str | None = None
    device: str = Field("auto", pattern=f"^({DEVICE_PATTERN})$")


class LayerParams(_Section):
    """One unlearning layer (`eul.layers.LayerConfig`)."""

    width: int = Field(64, ge=1)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    init_std: float = Field(0.02, gt=0.0)
    basis: Literal["shared", "trained"] = "shared"
    basis_seed: int = 0


class UnlearnParams(_Section):
    """One EUL update per request (`eul.methods.eul.EULConfig`, same names and defaults).

    `device` is not part of the update's recipe: it is where the pipeline trains each
    request's layer and evaluates a batch (auto, cpu, cuda, cuda:N, mps).
    """

    objective: Literal["paper", "unlikelihood", "npo", "task_only"] = "unlikelihood"
    reference: Literal["auto", "threshold", "probe", "none"] = "auto"
    threshold: float = 0.5
    probe_floor: float = Field(0.05, gt=0.0, lt=1.0)
    probe_margin: float = Field(4.0, ge=1.0)
    probe_hold: float = Field(0.7, ge=0.0, lt=1.0)
    alpha: float = 4.0
    lam: float = 1.0
    gamma: float = 0.2
    forget_weight: float = 1.0
    kl_bound: float = 5.0
    lm_bound: float = 5.0
    npo_beta: float = 0.5
    lr: float = Field(2e-3, gt=0.0)
    epochs: int = Field(16, ge=1)
    batch_size: int = Field(32, ge=1)
    forget_batch_size: int = Field(8, ge=1)
    retained_sample: int = Field(1000, ge=1)
    retained_per_epoch: int = Field(768, ge=1)
    warmup_share: float = Field(0.06, ge=0.0, le=1.0)
    teacher_top_k: int = Field(8, ge=0)
    unseen_sample: int = Field(500, ge=0)
    stop_share: float = Field(0.05, ge=0.0, le=1.0)
    stop_tolerance: float = Field(0.1, ge=0.0)
    push_while_top: bool = False
    token_levels: bool = True
    token_level_count: int = Field(3, ge=1)
    row_levels: bool = True
    forget_step_share: float = Field(0.25, ge=0.0, le=1.0)
    keep_weight: float = Field(1.0, ge=0.0)
    layer: LayerParams = Field(default_factory=LayerParams)
    seed: int = 0
    device: str = Field("auto", pattern=f"^({DEVICE_PATTERN})$")


class PartitionParams(_Section):
    """Forget and retained sets from a snapshot of the deletion log (stage `partition`)."""

    snapshot: str = "state/log-snapshot.json"
    data: str = "data/prepared/train.jsonl"
    out: str = "data/partition"


class PurgeParams(_Section):
    """Removal of deployed requests' rows from the data, the DVC cache and the remotes.

    `rebuild` names the stages whose outputs are copies of raw rows: they are rerun after
    the raw data changes so that no cached output still holds a forgotten row.
    """

    rebuild: list[str] = Field(default_factory=lambda: ["prepare", "partition"])
    ledger: str = "data/purge-log.jsonl"


class LogParams(_Section):
    """The deletion log: where it lives and how long a request may wait.

    `deadline_days`: until the request is suppressed (a deployed model forgets it);
    `erasure_days`: until it is erased (the deployed weights were trained without its rows
    and every artifact trained on them is deleted). Both count from submission.
    `anchors`: the file each batch report appends the log's head to (`eul.pipeline.anchors`),
    so that a log cut short or rewritten after it shows in the audit.
    """

    url: str = "sqlite:///state/deletion-log.sqlite"
    deadline_days: int = Field(30, ge=1)
    erasure_days: int = Field(30, ge=1)
    anchors: str = "state/log-anchors.jsonl"


class GateParams(_Section):
    """What a candidate version must show before it may replace production.

    No oracle is available each night, so the gates compare only what needs none: test
    accuracy against the production model, membership inference of the batch's forget rows
    against held-out rows, and forget accuracy against test accuracy (`eul.pipeline.gates`). A
    negative margin asks for forget accuracy that far below test accuracy.
    `two_sided`: the MIA AUC and the forget accuracy must also lie inside the bands the
    candidate shows on held-out rows of the forget rows' kind (`eul.evaluate.bands`), which
    fails an over-forgotten candidate as well as an under-forgotten one; `band_quantile` is
    the share of resamples left outside on each side, of `band_resamples`.
    """

    max_test_acc_drop: float = Field(0.02, ge=0.0, le=1.0)
    max_mia_auc: float = Field(0.6, ge=0.0, le=1.0)
    forget_acc_margin: float = Field(0.05, ge=-1.0, le=1.0)
    two_sided: bool = True
    band_quantile: float = Field(0.01, gt=0.0, lt=0.5)
    band_resamples: int = Field(2000, ge=100, le=100_000)


class PipelineParams(_Section):
    """The nightly batch: where it works, whether it promotes and purges by itself.

    `workdir` holds per-request layers with their statistics, fused batches and downloaded
    production versions (files, never forget text); reruns read it to skip finished work.
    `stack_layers`: each request's layer is trained on top of the batch's earlier ones, one
    after the other, so that their sum is the model that was trained; off, they train side
    by side in waves of `train_workers`, on the engine `task_runner` names: `thread`
    (threads of the flow's process), `dask` (a Dask cluster: the scheduler at
    `cluster_address`, or a local cluster of `train_workers` worker processes) or `ray`
    (the Ray cluster at `cluster_address`, or a local one). A wave trains on top of the
    earlier waves, each of its layers held off the wave's other forget features (with
    `unlearn.keep_weight`) and off retained features (`retained_hold` times that), so that
    their exact sum keeps what each one does alone (measured: docs/pipeline.md).
    `drill_fail_at`: a failure drill, null in production. Naming a point (`DrillPoint`)
    makes every batch stop there with an error, to check that a rerun with it null
    finishes the batch and repeats nothing.
    """

    workdir: str = "state/pipeline"
    auto_promote: bool = True
    purge: bool = True
    remotes: list[str] | None = None
    scan: bool = True
    stack_layers: bool = True
    train_workers: int = Field(2, ge=1)
    task_runner: Literal["thread", "dask", "ray"] = "thread"
    retained_hold: float = Field(1.0, ge=0.0)
    cluster_address: str | None = None
    eval_retained: int = Field(500, ge=1)
    drill_fail_at: DrillPoint | None = None


class RegistryParams(_Section):
    """MLflow: where runs, versions and artifacts go. MLFLOW_TRACKING_URI,
    EUL_MLFLOW_ARTIFACTS, EUL_MLFLOW_MODEL and EUL_MLFLOW_EXPERIMENT override these."""

    tracking_uri: str = "sqlite:///state/mlflow.db"
    artifact_location: str = "state/mlartifacts"
    model_name: str = "eul-model"
    experiment: str = "eul"


class CompactionParams(_Section):
    """When the stack of fused layers is replaced by a full retrain on the retained data:
    the share of training rows forgotten since the base was trained, or the number of
    requests fused on top of it, passes its threshold; or a suppressed request's erasure
    deadline (`log.erasure_days`) is less than `erasure_lead_days` away (the lead leaves
    time for the retrain, a reviewer's promotion, the purge and the erase step).
    A single pending request whose rows are more than `max_request_share` of the training
    rows gets no layer (one small layer cannot forget that much, and its batch would fail
    the gates for every other request in it): the nightly batch leaves it to `compact`,
    which is then due, retrains without its rows and covers it."""

    max_forget_share: float = Field(0.05, gt=0.0, le=1.0)
    max_request_share: float = Field(0.2, gt=0.0, le=1.0)
    max_requests: int = Field(50, ge=1)
    erasure_lead_days: int = Field(5, ge=0)


class Params(_Section):
    """All of params.yaml."""

    data: DataParams = Field(default_factory=DataParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    unlearn: UnlearnParams = Field(default_factory=UnlearnParams)
    partition: PartitionParams = Field(default_factory=PartitionParams)
    purge: PurgeParams = Field(default_factory=PurgeParams)
    log: LogParams = Field(default_factory=LogParams)
    gates: GateParams = Field(default_factory=GateParams)
    pipeline: PipelineParams = Field(default_factory=PipelineParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    compaction: CompactionParams = Field(default_factory=CompactionParams)

    def model_spec(self) -> ModelSpec:
        """The `eul.model.text_model.ModelSpec` of the base model."""
        from eul.model.text_model import ModelSpec

        return ModelSpec(**self.model.model_dump())

    def train_config(self) -> TrainConfig:
        """The `eul.model.training.TrainConfig` of the base model's training."""
        from eul.model.training import TrainConfig

        return TrainConfig(**self.train.model_dump(exclude={"out", "threads", "init", "device"}))

    def eul_config(self) -> EULConfig:
        """The `EULConfig` of one unlearning update (`unlearn.device` says where it runs,
        not what it computes, so it stays out)."""
        from eul.layers import LayerConfig
        from eul.methods.eul import EULConfig

        values = self.unlearn.model_dump(exclude={"layer", "device"})
        return EULConfig(**values, layer=LayerConfig(**self.unlearn.layer.model_dump()))


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    message = error["msg"]
    if error["type"] not in ("missing",) and "input" in error:
        message += f" (got {error['input']!r})"
    return f"{where}: {message}"


def parse_params(values: dict[str, Any] | None, source: str = DEFAULT_PATH) -> Params:
    """Check a mapping shaped like params.yaml; absent keys take their defaults."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections")
    try:
        return Params.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(_describe(e) for e in err.errors())
        raise ParamsError(f"{source}: {problems}") from None


def load_params(path: str | Path | None = None) -> Params:
    """Read params.yaml (or the defaults when `path` is None) and check every key."""
    if path is None:
        return Params()
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"no params file at {path}; pass --params or create one")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML{where}") from None
    return parse_params(values, source=str(path))
