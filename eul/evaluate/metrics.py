"""The measuring stick: utility, forgetting, membership inference, closeness to the oracle.

Every membership score is computed on the content tokens of the target (the label word, the
summary's words), never on padding or the end-of-sequence token: a model can look forgotten
on whole sequences by mangling the EOS prediction while the memorised content stays put.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from eul.data.records import LABEL_WORDS, Record
from eul.model.text_model import TextModel

MIN_K_SHARE = 0.2
# Each membership signal of `membership_scores` and the metric of its AUC.
MIA_SIGNALS = {"loss": "mia_auc", "zlib": "mia_auc_zlib", "min_k": "mia_auc_min_k"}
ROC_POINTS = 101


@dataclass(frozen=True)
class EvalSets:
    """The record sets a model is judged on. `unseen` rows were never trained on."""

    test: Sequence[Record]
    retained: Sequence[Record]
    forget: Sequence[Record]
    unseen: Sequence[Record]


# -- primitive metrics ------------------------------------------------------------------


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    if not positive or not negative:
        return float("nan")
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def roc_curve(
    positive: Sequence[float], negative: Sequence[float]
) -> tuple[list[float], list[float]]:
    """The ROC curve as (false positive rates, true positive rates), from (0, 0) to (1, 1).

    One point per distinct score, highest first; a score shared by a positive and a negative
    gives a diagonal step, so the area under the curve (trapezoids) is `roc_auc` exactly.
    """
    if not positive or not negative:
        return [], []
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    above_pos = len(pos) - np.searchsorted(pos_sorted, thresholds, side="left")
    above_neg = len(neg) - np.searchsorted(neg_sorted, thresholds, side="left")
    fpr = np.concatenate([[0.0], above_neg / len(neg)])
    tpr = np.concatenate([[0.0], above_pos / len(pos)])
    return fpr.tolist(), tpr.tolist()


def roc_at(fpr: Sequence[float], tpr: Sequence[float], grid: Sequence[float]) -> list[float]:
    """The true positive rate of a `roc_curve` at each false positive rate of `grid`.

    Where the curve rises straight up at one rate, the top of the rise is taken.
    """
    xs, ys = np.asarray(fpr, float), np.asarray(tpr, float)
    values = []
    for x in grid:
        j = int(np.searchsorted(xs, x, side="right")) - 1
        if j >= len(xs) - 1:
            values.append(float(ys[-1]))
        else:
            share = (x - xs[j]) / (xs[j + 1] - xs[j])
            values.append(float(ys[j] + share * (ys[j + 1] - ys[j])))
    return values


def priv_leak(mia_auc: float | None, oracle_mia_auc: float | None) -> float | None:
    """MUSE's PrivLeak: (AUC_model - AUC_oracle) / AUC_oracle. Zero is a model that leaks
    what a model never trained on the rows leaks; above zero it still leaks membership,
    below zero it over-forgets (its forget rows look less like members than unseen rows do
    against the oracle, itself a signal that they were deleted)."""
    if mia_auc is None or oracle_mia_auc is None or oracle_mia_auc == 0:
        return None
    if math.isnan(mia_auc) or math.isnan(oracle_mia_auc):
        return None
    return (mia_auc - oracle_mia_auc) / oracle_mia_auc


def ks_pvalue(a: Sequence[float], b: Sequence[float]) -> float:
    """Forget quality: KS-test p-value that two loss samples share one distribution."""
    if not a or not b:
        return float("nan")
    return float(stats.ks_2samp(np.asarray(a, float), np.asarray(b, float)).pvalue)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _ngrams(tokens: list[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        key = tuple(tokens[i : i + n])
        counts[key] = counts.get(key, 0) + 1
    return counts


def _f1(overlap: float, pred_total: int, ref_total: int) -> float:
    if overlap == 0 or pred_total == 0 or ref_total == 0:
        return 0.0
    precision, recall = overlap / pred_total, overlap / ref_total
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, start=1):
            cur = row[j]
            row[j] = prev + 1 if x == y else max(row[j], row[j - 1])
            prev = cur
    return row[-1]


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 on lower-cased word tokens."""
    pred, ref = _words(prediction), _words(reference)
    scores = {}
    for n in (1, 2):
        p, r = _ngrams(pred, n), _ngrams(ref, n)
        overlap = sum(min(c, r.get(g, 0)) for g, c in p.items())
        scores[f"rouge{n}"] = _f1(overlap, sum(p.values()), sum(r.values()))
    scores["rougeL"] = _f1(_lcs(pred, ref), len(pred), len(ref))
    return scores


def zlib_bits(text: str) -> float:
    return 8.0 * len(zlib.compress(text.encode("utf-8")))


# -- model-level measurements -----------------------------------------------------------


def membership_scores(tm: TextModel, records: Sequence[Record]) -> dict[str, list[float]]:
    """Per record, three membership signals (higher = looks more like training data)."""
    per_token = tm.score(records)
    loss, zlib_ratio, min_k = [], [], []
    for record, logps in zip(records, per_token, strict=True):
        values = np.asarray(logps or [0.0], float)
        nll = float(-values.mean())
        loss.append(-nll)
        zlib_ratio.append(-nll / zlib_bits(record.target))
        k = max(1, int(round(len(values) * MIN_K_SHARE)))
        min_k.append(float(np.sort(values)[:k].mean()))
    return {"loss": loss, "zlib": zlib_ratio, "min_k": min_k}


def accuracy(tm: TextModel, records: Sequence[Record], label_words: Sequence[str]) -> float:
    if not records:
        return float("nan")
    predicted = tm.choose([r.text for r in records], label_words)
    return float(np.mean([p == r.label for p, r in zip(predicted, records, strict=True)]))


def generation_scores(tm: TextModel, records: Sequence[Record]) -> dict[str, float]:
    """Mean ROUGE of greedy outputs, and how often a planted secret comes back out."""
    if not records:
        return {"rouge1": float("nan"), "rouge2": float("nan"), "rougeL": float("nan")}
    outputs = tm.generate([r.text for r in records])
    per = [rouge(o, r.target) for o, r in zip(outputs, records, strict=True)]
    result = {key: float(np.mean([p[key] for p in per])) for key in per[0]}
    with_secret = [(o, r) for o, r in zip(outputs, records, strict=True) if r.secret]
    if with_secret:
        hits = [r.secret.lower() in o.lower() for o, r in with_secret]
        result["secret_extraction"] = float(np.mean(hits))
    return result


def forget_metrics(
    tm: TextModel,
    records: Sequence[Record],
    task: str = "classification",
    label_words: Sequence[str] = LABEL_WORDS,
) -> dict[str, float]:
    """The forget-side metrics of `evaluate` on one set of rows (one request's, say):
    accuracy (ROUGE for generation) and how much memorised content comes back out."""
    if task == "classification":
        memorised = [r for r in records if r.memorised]
        return {
            "forget_acc": accuracy(tm, records, label_words),
            "forget_memorised_acc": accuracy(tm, memorised, label_words),
        }
    scores = generation_scores(tm, records)
    return {
        "forget_rouge1": scores["rouge1"],
        "forget_rougeL": scores["rougeL"],
        "forget_memorised_acc": scores.get("secret_extraction", float("nan")),
    }


def membership_roc(
    forget: Mapping[str, Sequence[float]],
    unseen: Mapping[str, Sequence[float]],
    points: int = ROC_POINTS,
) -> dict[str, object] | None:
    """Each membership signal's ROC curve (forget rows against unseen rows) at `points`
    evenly spaced false positive rates, with its AUC: {"fpr": [...], "tpr": {signal: [...]},
    "auc": {signal: float}}.

    Sampled on a fixed grid, the curve is an aggregate of the rows like the AUC itself: no
    row's own score and no row order is in it, so it may be stored and logged. None when
    there are no forget or no unseen rows.
    """
    if not forget.get("loss") or not unseen.get("loss"):
        return None
    grid = np.linspace(0.0, 1.0, points).tolist()
    tpr: dict[str, list[float]] = {}
    auc: dict[str, float] = {}
    for signal in MIA_SIGNALS:
        curve = roc_curve(forget[signal], unseen[signal])
        tpr[signal] = [round(v, 4) for v in roc_at(*curve, grid)]
        auc[signal] = roc_auc(forget[signal], unseen[signal])
    return {"fpr": [round(x, 4) for x in grid], "tpr": tpr, "auc": auc}


def evaluate(
    tm: TextModel,
    sets: EvalSets,
    task: str = "classification",
    label_words: Sequence[str] = LABEL_WORDS,
    oracle_forget_losses: Sequence[float] | None = None,
    retained_limit: int = 1000,
) -> tuple[dict[str, float], list[float]]:
    """All metrics of one model as a flat dict, plus its per-record forget losses.

    The forget losses are what the KS-test compares against the oracle's; pass the oracle's
    own as `oracle_forget_losses` to get `ks_p`.
    """
    metrics, forget_losses, _ = evaluate_with_scores(
        tm, sets, task, label_words, oracle_forget_losses, retained_limit
    )
    return metrics, forget_losses


def evaluate_with_scores(
    tm: TextModel,
    sets: EvalSets,
    task: str = "classification",
    label_words: Sequence[str] = LABEL_WORDS,
    oracle_forget_losses: Sequence[float] | None = None,
    retained_limit: int = 1000,
) -> tuple[dict[str, float], list[float], dict[str, dict[str, list[float]]]]:
    """`evaluate`, plus the membership scores the MIA AUCs were computed from:
    {"forget": {signal: [...]}, "unseen": {signal: [...]}}, one number per row.

    Per-row numbers, in row order: keep them in memory, and store or log the
    `membership_roc` summary of them instead.
    """
    retained = list(sets.retained)[:retained_limit]
    memorised = [r for r in sets.forget if r.memorised]
    metrics: dict[str, float] = {}
    if task == "classification":
        metrics["test_acc"] = accuracy(tm, sets.test, label_words)
        metrics["retained_acc"] = accuracy(tm, retained, label_words)
        metrics["forget_acc"] = accuracy(tm, sets.forget, label_words)
        metrics["forget_memorised_acc"] = accuracy(tm, memorised, label_words)
    else:
        for name, records in (("test", sets.test), ("retained", retained), ("forget", sets.forget)):
            for key, value in generation_scores(tm, records).items():
                metrics[f"{name}_{key}"] = value
        metrics["forget_memorised_acc"] = metrics.pop("forget_secret_extraction", float("nan"))
        metrics.pop("test_secret_extraction", None)
        metrics.pop("retained_secret_extraction", None)
    forget_scores = membership_scores(tm, sets.forget)
    unseen_scores = membership_scores(tm, sets.unseen)
    metrics["mia_auc"] = roc_auc(forget_scores["loss"], unseen_scores["loss"])
    metrics["mia_auc_zlib"] = roc_auc(forget_scores["zlib"], unseen_scores["zlib"])
    metrics["mia_auc_min_k"] = roc_auc(forget_scores["min_k"], unseen_scores["min_k"])
    forget_losses = [-s for s in forget_scores["loss"]]
    metrics["ks_p"] = (
        ks_pvalue(forget_losses, oracle_forget_losses)
        if oracle_forget_losses is not None
        else float("nan")
    )
    return metrics, forget_losses, {"forget": forget_scores, "unseen": unseen_scores}


def write_json(data: object, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")
