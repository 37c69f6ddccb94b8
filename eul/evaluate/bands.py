"""Where a model that never saw the forget rows would land, and how far chance moves it.

There is no oracle in production, yet a candidate can fail two ways: it still knows the
rows (under-forgotten), or it treats them as a model that never saw them would not
(over-forgotten: rows it is unusually sure are wrong were deleted, which an attacker can
read too). The reference is the held-out rows, which no model saw: each forget row is stood
in for by held-out rows of its kind, and the candidate's own answers on those stand-ins give
what it would show on the forget rows had it never seen them. Repeated over resamples, that
gives a band for the forget accuracy and for the membership AUC at the request's size,
measured on the candidate itself, with no fixed number.

"Of its kind", for labelled rows: rows the retained data gives the same odds of their label
(the probe reference, `eul.methods.reference`: a bag-of-tokens classifier fitted on the
retained rows and calibrated on held-out rows), so that an odd label is stood in for by
held-out rows with odd labels, and an ordinary one by ordinary ones. For free text there is
no such odds: every held-out row is of the forget rows' kind, and the band is that of
held-out rows against held-out rows of the request's size. Its low side is then not a
reference (a model that never saw a planted secret is less sure of it than of any held-out
row), so only labelled rows are held to it.

Everything kept is an aggregate (a band's ends, row counts); no row's score leaves here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from eul.data.records import Record
from eul.evaluate.metrics import roc_auc

# Each forget row is stood in for by one of its nearest held-out rows in the probe's odds.
NEIGHBOURS = 15
# Bands are kept to 4 digits; a value on an end (a share of the same rows) is inside.
ROUNDING = 5e-5


@dataclass(frozen=True)
class BandConfig:
    """How the bands are drawn: the share of resamples left out on each side, how many."""

    quantile: float = 0.01
    resamples: int = 2000
    neighbours: int = NEIGHBOURS
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 0.5:
            raise ValueError(f"quantile must lie in (0, 0.5), got {self.quantile}")
        if self.resamples < 100 or self.neighbours < 1:
            raise ValueError("resamples must be at least 100 and neighbours at least 1")


@dataclass(frozen=True)
class Band:
    """A metric's expected value for never-seen rows and the range chance leaves around it."""

    low: float
    expected: float
    high: float
    # False: the low end is drawn but is not a reference (free text), and is not gated
    two_sided: bool = True

    def rounded(self, digits: int = 4) -> dict[str, Any]:
        values = asdict(self)
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in values.items()}


@dataclass(frozen=True)
class ReferenceBands:
    """The bands a batch's forget rows are held to, with what they were drawn from."""

    reference: str
    forget_rows: int
    heldout_rows: int
    mia_auc: Band
    forget_acc: Band | None
    quantile: float
    resamples: int

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("mia_auc", "forget_acc")}
        data["mia_auc"] = self.mia_auc.rounded()
        data["forget_acc"] = self.forget_acc.rounded() if self.forget_acc else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceBands:
        forget = data.get("forget_acc")
        return cls(
            reference=str(data["reference"]),
            forget_rows=int(data["forget_rows"]),
            heldout_rows=int(data["heldout_rows"]),
            mia_auc=Band(**data["mia_auc"]),
            forget_acc=Band(**forget) if forget else None,
            quantile=float(data["quantile"]),
            resamples=int(data["resamples"]),
        )


def _band(draws: np.ndarray, quantile: float, two_sided: bool = True) -> Band:
    low, mid, high = np.quantile(draws, [quantile, 0.5, 1.0 - quantile])
    return Band(float(low), float(mid), float(high), two_sided)


@dataclass(frozen=True)
class StandIns:
    """The rows that may stand in for a forget row, and what the candidate shows on each: its
    membership score, whether it answers it right, the probe's odds of its label, and the
    held-out row it is (a relabelled copy of a held-out row is that row, for the AUC's rest)."""

    scores: np.ndarray
    correct: np.ndarray | None
    odds: np.ndarray
    source: np.ndarray
    # True for a held-out row given another label: it stands in only for a forget row whose
    # label the probe does not back (odds below 0); None: no such rows
    relabelled: np.ndarray | None = None

    @classmethod
    def heldout(
        cls, scores: Sequence[float], correct: Sequence[bool] | None, odds: Sequence[float]
    ) -> StandIns:
        """The held-out rows as they are."""
        return cls(
            np.asarray(scores, float),
            None if correct is None else np.asarray(correct, float),
            np.asarray(odds, float),
            np.arange(len(scores)),
        )


def _nearest(forget_odds: np.ndarray, stand_ins: StandIns, neighbours: int) -> np.ndarray:
    """[forget rows, k]: for each forget row, the k stand-ins nearest to it in the probe's
    odds; a relabelled row stands in only for a forget row the probe does not back (a
    weak probe gives every row odds near 0, and a row it backs is then not a flipped one)."""
    distance = np.abs(forget_odds[:, None] - stand_ins.odds[None, :])
    if stand_ins.relabelled is not None:
        backed = forget_odds >= 0
        distance[np.ix_(backed, stand_ins.relabelled.astype(bool))] = np.inf
    k = min(neighbours, int(np.isfinite(distance).sum(axis=1).min()))
    return np.argsort(distance, axis=1, kind="stable")[:, :k]


def draw_bands(
    heldout_scores: Sequence[float],
    heldout_correct: Sequence[bool] | None,
    forget_rows: int,
    forget_odds: Sequence[float] | None = None,
    stand_ins: StandIns | None = None,
    config: BandConfig | None = None,
) -> tuple[Band, Band | None]:
    """The membership-AUC band and (with `heldout_correct`) the forget-accuracy band for
    `forget_rows` rows, from the candidate's own membership scores and right answers on the
    held-out rows. With the probe's odds of each forget row's label and `stand_ins`, each
    forget row is stood in for by stand-ins of its odds, against the held-out rows they are
    not; without, by any held-out row against the rest."""
    config = config or BandConfig()
    scores = np.asarray(heldout_scores, float)
    if forget_rows < 1 or len(scores) < 2:
        raise ValueError("bands need at least one forget row and two held-out rows")
    rng = np.random.default_rng(config.seed)
    matched = forget_odds is not None and stand_ins is not None
    pools = (
        _nearest(np.asarray(forget_odds, float), stand_ins, config.neighbours) if matched else None
    )
    correct = None if heldout_correct is None else np.asarray(heldout_correct, float)
    aucs, accs = [], []
    everyone = np.arange(len(scores))
    for _ in range(config.resamples):
        if pools is not None:
            pick = rng.integers(pools.shape[1], size=len(pools))
            chosen = pools[np.arange(len(pools)), pick]
            chosen_scores, rows = stand_ins.scores[chosen], stand_ins.source[chosen]
            chosen_correct = None if stand_ins.correct is None else stand_ins.correct[chosen]
        else:
            rows = rng.choice(everyone, forget_rows, replace=forget_rows > len(scores) // 2)
            chosen_scores = scores[rows]
            chosen_correct = None if correct is None else correct[rows]
        rest = np.setdiff1d(everyone, rows, assume_unique=False)
        negatives = scores[rest if len(rest) else everyone]
        aucs.append(roc_auc(chosen_scores.tolist(), negatives.tolist()))
        if correct is not None and chosen_correct is not None:
            accs.append(float(chosen_correct.mean()))
    mia = _band(np.asarray(aucs), config.quantile, two_sided=matched)
    acc = _band(np.asarray(accs), config.quantile) if accs else None
    return mia, acc


def label_log_odds(probabilities: Sequence[float]) -> np.ndarray:
    """log(p / (1 - p)) of each row's label, clipped away from 0 and 1."""
    p = np.clip(np.asarray(probabilities, float), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def reference_bands(
    tm,
    forget: Sequence[Record],
    heldout: Sequence[Record],
    retained: Sequence[Record],
    heldout_scores: Sequence[float],
    label_words: Sequence[str] | None,
    config: BandConfig | None = None,
    probe=None,
) -> ReferenceBands | None:
    """The bands of `forget` for the candidate `tm` (None without forget or held-out rows).

    `heldout_scores` are the candidate's loss-signal membership scores of `heldout`, as
    `eul.evaluate.metrics.membership_scores` gives them; `label_words` (classification) the
    answers, which switch on the probe reference and the forget-accuracy band. `probe`: a
    `reference_probe` of the same rows, to gate several candidates with one fit.
    """
    config = config or BandConfig()
    if not forget or len(heldout) < 2:
        return None
    labelled = label_words is not None and all(r.label is not None for r in [*forget, *heldout])
    if not labelled:
        mia, _ = draw_bands(heldout_scores, None, len(forget), config=config)
        return ReferenceBands(
            "held-out rows", len(forget), len(heldout), mia, None, config.quantile,
            config.resamples,
        )  # fmt: skip
    probe = probe or reference_probe(tm.tokenizer, retained, heldout, len(label_words))
    forget_p = probe.label_probability(list(forget)).tolist()
    forget_odds = label_log_odds(forget_p)
    heldout = list(heldout)
    predicted = tm.choose([r.text for r in heldout], list(label_words))
    correct = [p == r.label for p, r in zip(predicted, heldout, strict=True)]
    pools = _labelled_stand_ins(tm, probe, heldout, heldout_scores, predicted, label_words)
    matched = [draw_bands(heldout_scores, correct, len(forget), forget_odds, pool, config)
               for pool in pools]  # fmt: skip
    plain = draw_bands(heldout_scores, correct, len(forget), config=config)
    (both_mia, both_acc), (labelled_mia, labelled_acc) = matched
    mia = _either([both_mia, labelled_mia], low_too=[plain[0]])
    # the held-out rows as labelled give a flipped row a hard row that is mostly answered
    # right: what a model that still knows the row shows, so they widen the low end only
    acc = _either([both_acc, probe_accuracy_band(forget_p, config)], [labelled_acc, plain[1]])
    return ReferenceBands(
        "probe: held-out rows of the same odds, as labelled or relabelled",
        len(forget), len(heldout), mia, acc, config.quantile, config.resamples,
    )  # fmt: skip


def _labelled_stand_ins(
    tm,
    probe,
    heldout: list[Record],
    heldout_scores: Sequence[float],
    predicted: Sequence[int],
    label_words: Sequence[str],
) -> tuple[StandIns, StandIns]:
    """The held-out rows, and again with the label the probe backs most after its own; and
    the held-out rows as labelled alone.

    A forget row whose label the retained data does not back (a flipped or mislabelled one)
    is then stood in for by a row the model never saw, given a label its words go against;
    held-out rows as labelled are mostly right, and stand in for it with a hard row only.
    """
    from dataclasses import replace

    from eul.evaluate.metrics import membership_scores

    correct = [p == r.label for p, r in zip(predicted, heldout, strict=True)]
    as_labelled = StandIns.heldout(
        heldout_scores, correct, label_log_odds(probe.label_probability(heldout).tolist())
    )
    probabilities = probe.probabilities(heldout).clone()
    probabilities[range(len(heldout)), [int(r.label) for r in heldout]] = -1.0
    others = probabilities.argmax(1).tolist()
    relabelled = [
        replace(r, label=other, target=label_words[other])
        for r, other in zip(heldout, others, strict=True)
    ]
    relabelled_correct = [p == r.label for p, r in zip(predicted, relabelled, strict=True)]
    both = StandIns(
        np.r_[as_labelled.scores, membership_scores(tm, relabelled)["loss"]],
        np.r_[as_labelled.correct, np.asarray(relabelled_correct, float)],
        np.r_[as_labelled.odds, label_log_odds(probe.label_probability(relabelled).tolist())],
        np.r_[as_labelled.source, as_labelled.source],
        np.r_[np.zeros(len(heldout), bool), np.ones(len(heldout), bool)],
    )
    return both, as_labelled


def reference_probe(
    tokenizer, retained: Sequence[Record], heldout: Sequence[Record], n_labels: int
):
    """The retained-data probe the labelled bands draw their odds from: fitted on the retained
    rows with a label among the `n_labels` answers, calibrated on the held-out rows."""
    from eul.methods.reference import RetainedProbe

    fit_rows = [r for r in retained if r.label is not None and 0 <= r.label < n_labels]
    return RetainedProbe.fit(tokenizer, fit_rows, n_labels).calibrate(heldout)


def probe_accuracy_band(label_p: Sequence[float], config: BandConfig) -> Band:
    """The forget accuracy if each row were answered right with the probe's (calibrated)
    probability of its label: the retained data's own say, which sees a label that goes
    against a row's words where held-out stand-ins (whose labels are mostly right) cannot."""
    rng = np.random.default_rng(config.seed + 1)
    p = np.asarray(label_p, float)
    draws = (rng.random((config.resamples, len(p))) < p).mean(axis=1)
    return _band(draws, config.quantile)


def _either(bands: list[Band | None], low_too: list[Band | None]) -> Band | None:
    """The range any of `bands` allows, its low end widened to the lows of `low_too`.

    The odds come from a bag-of-tokens probe, which can miss what makes a row odd; each
    reference is one reading, and a value outside all of them is outside what any explains.
    Any held-out row (`low_too`, the plainest reference) only widens the low end: against a
    request with flipped rows it expects them ranked like ordinary rows, which is what a
    model that still knows them shows.
    """
    drawn = [b for b in bands if b is not None]
    if not drawn:
        return None
    lows = [b.low for b in [*drawn, *low_too] if b is not None]
    return Band(min(lows), drawn[0].expected, max(b.high for b in drawn))


def band_verdict(value: float | None, band: Band) -> tuple[bool, str]:
    """Whether `value` lies in `band`, ends included, and the side it fell out on ("" when
    inside)."""
    if value is None or math.isnan(value):
        return False, "missing"
    if value > band.high + ROUNDING:
        return False, "above"
    if band.two_sided and value < band.low - ROUNDING:
        return False, "below"
    return True, ""
