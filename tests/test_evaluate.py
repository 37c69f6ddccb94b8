"""The measuring stick: AUC, KS, ROUGE, and the full metric dict on a real tiny model."""

from __future__ import annotations

import math

import pytest

from eul.evaluate import EvalSets, evaluate, ks_pvalue, roc_auc, rouge


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
