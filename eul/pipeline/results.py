"""What each pipeline step hands the next: frozen dataclasses, never record text.

The steps pass ids, counts, hashes, paths, metrics and seconds; the Prefect tasks pass these
objects on unchanged. Where a step writes one to a file (a layer's done.json, a batch's
evaluation.json) `to_json` gives the same keys the files have always had.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _seconds() -> dict[str, float]:
    return {}


@dataclass(frozen=True)
class Snapshot:
    """The log as the batch saw it: the entry it was cut at and the pending requests."""

    log_seq: int
    log_hash: str
    validated: list[str]
    rejected: list[str]
    reconciled: list[str]
    pending: list[str]
    statuses: dict[str, str]
    # validated requests too large for a layer ({id: share of the training rows}), left out
    # of `pending` for the `compact` flow (`eul.pipeline.compaction.oversized_requests`)
    to_compaction: dict[str, float] = field(default_factory=dict)
    # why each request rejected now was rejected (generic reasons: no subject, unknown ids)
    rejected_reasons: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ForgetSet:
    """One request's forget rows: how many, and the file that holds them."""

    rows: int
    file: str


@dataclass(frozen=True)
class Partition:
    """Forget sets per pending request and the retained set (the `partition` stage)."""

    via: str
    log_seq: int
    requests: dict[str, ForgetSet]
    rows_forgotten: int
    rows_retained: int
    retained_file: str


@dataclass(frozen=True)
class LayerResult:
    """One request's unlearning layer (None where its rows are not in the training split)."""

    request_id: str
    rows: int
    production_version: int | None
    trained_on: list[str]
    layer_dir: str | None
    layer_sha256: str | None = None
    mlflow_run_id: str | None = None
    metrics: dict[str, Any] | None = None
    epochs: int | None = None
    skipped: bool = False
    seconds: dict[str, float] = field(default_factory=_seconds)

    def to_json(self) -> dict[str, Any]:
        """The layer folder's done.json: a layer's fields only where one was trained."""
        found = asdict(self)
        found.pop("skipped")
        found.pop("seconds")
        if self.layer_dir is None:
            for name in ("layer_sha256", "mlflow_run_id", "metrics", "epochs"):
                found.pop(name)
        return found

    @classmethod
    def from_json(cls, value: dict[str, Any], skipped: bool = True) -> LayerResult:
        return cls(**value, skipped=skipped)


@dataclass(frozen=True)
class FusedBatch:
    """The batch's one fused layer and the fusion state it was solved from."""

    layer_dir: str
    state_dir: str
    base_dir: str
    added: list[str]
    already_fused: list[str]
    requests_in_state: int
    seconds: dict[str, float] = field(default_factory=_seconds)


@dataclass(frozen=True)
class Retrained:
    """A compaction's retrained base, with an identity fused layer and an empty state."""

    base_dir: str
    layer_dir: str
    state_dir: str
    rows: int
    rows_left_out: int
    final_loss: float
    trained_without: tuple[str, ...] = ()
    skipped: bool = False
    seconds: dict[str, float] = field(default_factory=_seconds)

    def to_json(self) -> dict[str, Any]:
        """The retrain folder's done.json."""
        found = asdict(self)
        found.pop("skipped")
        found.pop("seconds")
        return found


@dataclass(frozen=True)
class Evaluation:
    """The candidate and the production model measured on the same rows."""

    candidate: dict[str, Any]
    production: dict[str, Any]
    per_request: dict[str, dict[str, Any]]
    mia_roc: dict[str, Any]
    rows: dict[str, int]
    seconds: dict[str, float] = field(default_factory=_seconds)
    # what a model that never saw the forget rows would show (`eul.evaluate.bands`), JSON
    bands: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The `evaluation` part of evaluation.json (and what the plots read)."""
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """The gates of one evaluation: each gate, whether all passed, why not."""

    gates: dict[str, Any]
    passed: bool
    reasons: list[str]


@dataclass(frozen=True)
class Registered:
    """A registered version of a batch: new (`reused` False) or found from an earlier run."""

    version: int
    gates: dict[str, Any]
    passed: bool
    reused: bool
    run_id: str | None = None
    seconds: dict[str, float] = field(default_factory=_seconds)


@dataclass(frozen=True)
class Promoted:
    """The production alias moved: to which version, from which, and what became deployed."""

    version: int
    previous: int | None
    deployed: list[str]
    seconds: dict[str, float] = field(default_factory=_seconds)


@dataclass(frozen=True)
class PurgeReport:
    """What the purge step removed (or why it did nothing: `note`)."""

    purged: list[str]
    note: str | None = None
    rows_removed: int | None = None
    data_dvc_md5: str | None = None
    remotes: list[str] | None = None
    seconds: dict[str, float] = field(default_factory=_seconds)


@dataclass(frozen=True)
class CompactionStatus:
    """How much the production base has had to forget, and whether a compaction is due."""

    production_version: int | None
    stacked_requests: int
    forgotten_rows: int
    training_rows: int
    forget_share: float
    due: bool
    reasons: list[str]
    erasure_due: list[str] = field(default_factory=list)
    oversized: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ErasureReport:
    """What the erase step deleted and marked (or why it did nothing: `note`).

    `compaction_version`: the compaction the production base comes from; `versions`: the
    older versions whose weights are gone; `dvc_objects`: `models/base` objects deleted from
    the cache and remotes; `folders`: working folders deleted."""

    erased: list[str]
    note: str | None = None
    compaction_version: int | None = None
    versions: list[int] = field(default_factory=list)
    model_artifacts_deleted: int = 0
    dvc_objects: int = 0
    remotes: list[str] = field(default_factory=list)
    folders: int = 0
    seconds: dict[str, float] = field(default_factory=_seconds)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
