"""The measuring stick: AUC, KS, ROUGE, and the full metric dict on a real tiny model."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from eul.evaluate.metrics import (
    EvalSets,
    evaluate,
    evaluate_with_scores,
    forget_metrics,
    ks_pvalue,
    membership_roc,
    roc_at,
    roc_auc,
    roc_curve,
    rouge,
)


def test_roc_auc_of_separated_equal_and_reversed_scores() -> None:
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5
    assert math.isnan(roc_auc([], [1.0]))


def test_ks_p_value_is_high_for_one_distribution_and_low_for_two() -> None:
    same = ks_pvalue([0.1 * i for i in range(50)], [0.1 * i + 0.01 for i in range(50)])
    different = ks_pvalue([0.1 * i for i in range(50)], [10 + 0.1 * i for i in range(50)])
    assert same > 0.9
    assert different < 1e-6


def test_rouge_scores() -> None:
    assert rouge("anna meets tom", "anna meets tom") == {
        "rouge1": 1.0,
        "rouge2": 1.0,
        "rougeL": 1.0,
    }
    partial = rouge("anna meets tom at noon", "anna will meet tom")
    assert partial["rouge1"] == pytest.approx(2 * (2 / 5) * (2 / 4) / (2 / 5 + 2 / 4))
    assert partial["rouge2"] == 0.0
    assert rouge("", "x")["rougeL"] == 0.0


def test_evaluate_reports_every_metric_and_sees_memorisation(tiny_trained, tiny_records) -> None:
    # given the tiny trained model and a forget set of memorised and normal rows
    train, heldout, test = tiny_records
    memorised = [r for r in train if r.memorised][:6]
    forget = memorised + [r for r in train if not r.memorised][:6]
    sets = EvalSets(test=test, retained=train[:100], forget=forget, unseen=heldout)
    # when it is evaluated
    metrics, losses = evaluate(tiny_trained, sets, oracle_forget_losses=[5.0] * 12)
    # then every metric is there, memorised labels are reproduced and members look like members
    for key in (
        "test_acc",
        "retained_acc",
        "forget_acc",
        "forget_memorised_acc",
        "mia_auc",
        "mia_auc_zlib",
        "mia_auc_min_k",
        "ks_p",
    ):
        assert key in metrics
    assert metrics["forget_memorised_acc"] == 1.0
    assert metrics["mia_auc"] > 0.6
    assert len(losses) == 12
    assert metrics["ks_p"] < 0.01


def test_roc_curve_area_is_the_auc_ties_included() -> None:
    # given scores with ties inside and across the two groups
    rng = random.Random(5)
    positive = [round(rng.gauss(0.8, 1), 1) for _ in range(30)]
    negative = [round(rng.gauss(0.0, 1), 1) for _ in range(70)]
    # when the curve is computed
    fpr, tpr = roc_curve(positive, negative)
    # then it runs from (0, 0) to (1, 1) without going back, and its area is the AUC
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (np.asarray(tpr[1:]) + np.asarray(tpr[:-1])) / 2))
    assert area == pytest.approx(roc_auc(positive, negative), abs=1e-12)
    assert roc_curve([], [1.0]) == ([], [])


def test_roc_at_reads_the_curve_between_and_on_its_points() -> None:
    # a curve that rises straight up at 0 and at 0.5
    fpr, tpr = [0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0]
    assert roc_at(fpr, tpr, [0.0, 0.25, 0.5, 0.75, 1.0]) == [0.5, 0.5, 1.0, 1.0, 1.0]
    # and a diagonal step is read on the diagonal
    assert roc_at([0.0, 1.0], [0.0, 1.0], [0.3]) == [pytest.approx(0.3)]


def test_membership_roc_is_a_fixed_size_summary_with_exact_aucs() -> None:
    rng = random.Random(2)
    forget = {s: [rng.gauss(1, 1) for _ in range(7)] for s in ("loss", "zlib", "min_k")}
    unseen = {s: [rng.gauss(0, 1) for _ in range(50)] for s in ("loss", "zlib", "min_k")}
    curve = membership_roc(forget, unseen, points=21)
    # the same number of points whatever the row counts: no row's own score is in it
    assert len(curve["fpr"]) == 21 and {len(v) for v in curve["tpr"].values()} == {21}
    for signal in ("loss", "zlib", "min_k"):
        assert curve["auc"][signal] == roc_auc(forget[signal], unseen[signal])
        assert curve["tpr"][signal][-1] == 1.0
    assert membership_roc({"loss": []}, unseen) is None


def test_evaluate_with_scores_returns_what_the_aucs_were_computed_from(
    tiny_trained, tiny_records
) -> None:
    train, heldout, test = tiny_records
    forget = [r for r in train if r.memorised][:4] + [r for r in train if not r.memorised][:6]
    sets = EvalSets(test=test[:20], retained=train[:20], forget=forget, unseen=heldout)
    metrics, losses, scores = evaluate_with_scores(tiny_trained, sets)
    # the same metrics as `evaluate`, and one score per row and signal
    assert metrics == pytest.approx(evaluate(tiny_trained, sets)[0], nan_ok=True)
    assert {len(v) for v in scores["forget"].values()} == {len(forget)}
    assert {len(v) for v in scores["unseen"].values()} == {len(heldout)}
    assert roc_auc(scores["forget"]["loss"], scores["unseen"]["loss"]) == metrics["mia_auc"]
    assert [-s for s in scores["forget"]["loss"]] == losses
    # and the forget metrics of one part of the rows are measured on that part alone
    part = forget_metrics(tiny_trained, forget[:4])
    assert part["forget_memorised_acc"] == part["forget_acc"] == 1.0
    assert forget_metrics(tiny_trained, forget)["forget_acc"] == metrics["forget_acc"]


def test_evaluating_on_an_explicit_cpu_device_gives_the_same_metrics(
    tiny_trained, tiny_records
) -> None:
    # given the trained model, and a copy of it placed on the CPU by name
    train, heldout, test = tiny_records
    sets = EvalSets(test=test, retained=train[:60], forget=train[:20], unseen=heldout)
    placed = tiny_trained.copy().to("cpu")
    # when both are evaluated, then every metric and loss is the same (NaN included)
    plain_metrics, plain_losses = evaluate(tiny_trained, sets)
    placed_metrics, placed_losses = evaluate(placed, sets)
    assert json.dumps(placed_metrics) == json.dumps(plain_metrics)
    assert placed_losses == plain_losses


def test_priv_leak_is_the_auc_gap_relative_to_the_oracles() -> None:
    from eul.evaluate.metrics import priv_leak

    assert priv_leak(0.6, 0.5) == pytest.approx(0.2)  # still leaks membership
    assert priv_leak(0.25, 0.5) == pytest.approx(-0.5)  # over-forgotten
    assert priv_leak(0.5, 0.5) == 0
    assert priv_leak(None, 0.5) is None and priv_leak(0.5, 0.0) is None
    assert priv_leak(float("nan"), 0.5) is None
