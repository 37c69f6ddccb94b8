"""The gates a candidate version must pass: utility, membership inference, forget vs test."""

from __future__ import annotations

import math

import pytest

from eul.evaluate.bands import Band, ReferenceBands
from eul.params import GateParams
from eul.pipeline.gates import check_gates, failure_reasons, gate_bands, passed
from eul.stores.registry.review import gate_tags

LIMITS = GateParams(max_test_acc_drop=0.02, max_mia_auc=0.6, forget_acc_margin=0.05)
PRODUCTION = {"test_acc": 0.85, "forget_acc": 0.97, "mia_auc": 0.7}


def test_a_candidate_within_every_threshold_passes():
    # given a candidate that kept test accuracy and forgot the batch's rows
    candidate = {"test_acc": 0.84, "forget_acc": 0.5, "mia_auc": 0.3}
    # when the gates are checked
    gates = check_gates(candidate, PRODUCTION, forget_rows=12, params=LIMITS)
    # then every gate passes and no reason is given
    assert passed(gates)
    assert failure_reasons(gates) == []
    assert math.isclose(gates["utility"]["drop"], 0.01)


def test_each_gate_fails_on_its_own_threshold():
    # a 3-point drop in test accuracy
    gates = check_gates({"test_acc": 0.82, "forget_acc": 0.5, "mia_auc": 0.3}, PRODUCTION, 12,
                        LIMITS)  # fmt: skip
    assert [n for n, g in gates.items() if not g["passed"]] == ["utility"]
    assert "fell 0.030 (0.850 -> 0.820)" in failure_reasons(gates)[0]
    # forget rows still told apart from held-out rows
    gates = check_gates({"test_acc": 0.85, "forget_acc": 0.5, "mia_auc": 0.61}, PRODUCTION, 12,
                        LIMITS)  # fmt: skip
    assert [n for n, g in gates.items() if not g["passed"]] == ["mia_auc"]
    assert "AUC 0.610" in failure_reasons(gates)[0]
    # the forget rows still answered better than unseen test rows
    gates = check_gates({"test_acc": 0.85, "forget_acc": 0.91, "mia_auc": 0.5}, PRODUCTION, 12,
                        LIMITS)  # fmt: skip
    assert [n for n, g in gates.items() if not g["passed"]] == ["forget_vs_test"]
    assert "forget accuracy 0.910 is above test accuracy 0.850" in failure_reasons(gates)[0]


def test_a_negative_margin_asks_for_forget_accuracy_below_test_accuracy():
    strict = GateParams(forget_acc_margin=-0.1)
    gates = check_gates({"test_acc": 0.85, "forget_acc": 0.8, "mia_auc": 0.5}, PRODUCTION, 5,
                        strict)  # fmt: skip
    assert gates["forget_vs_test"]["passed"] is False


def test_missing_measurements_fail_but_no_forget_rows_is_nothing_to_measure():
    # given a batch whose forget metrics could not be measured although it had rows
    nan = float("nan")
    gates = check_gates({"test_acc": 0.85, "forget_acc": nan, "mia_auc": nan}, PRODUCTION, 4,
                        LIMITS)  # fmt: skip
    # then those gates fail: a gate that cannot be checked is not passed
    assert not gates["mia_auc"]["passed"] and not gates["forget_vs_test"]["passed"]
    assert not passed(gates)
    # but a batch with no rows in the training data (a compaction) has nothing to forget
    gates = check_gates({"test_acc": 0.85, "forget_acc": nan, "mia_auc": nan}, PRODUCTION, 0,
                        LIMITS)  # fmt: skip
    assert passed(gates)
    assert gates["mia_auc"]["note"] == "no forget rows to measure"


def test_no_gate_at_all_is_not_a_pass():
    assert passed({}) is False


def test_gate_bands_are_the_thresholds_on_each_metric_scale():
    # given the gates of a batch with forget rows
    candidate = {"test_acc": 0.84, "forget_acc": 0.5, "mia_auc": 0.3}
    gates = check_gates(candidate, PRODUCTION, forget_rows=12, params=LIMITS)
    # then each gated metric has its line: utility from production, forget from test
    bands = gate_bands(gates)
    assert set(bands) == {"test_acc", "mia_auc", "forget_acc"}
    assert bands["test_acc"][0] == pytest.approx(0.85 - 0.02) and bands["test_acc"][1] is None
    assert bands["mia_auc"] == (None, 0.6)
    assert bands["forget_acc"][1] == pytest.approx(0.84 + 0.05)
    # and a batch without forget rows has nothing to draw on the forget side
    empty = gate_bands(check_gates(candidate, PRODUCTION, forget_rows=0, params=LIMITS))
    assert set(empty) == {"test_acc"}


BANDS = ReferenceBands(
    "probe: held-out rows of the same odds",
    forget_rows=12,
    heldout_rows=300,
    mia_auc=Band(0.35, 0.48, 0.62),
    forget_acc=Band(0.42, 0.58, 0.75),
    quantile=0.01,
    resamples=2000,
)


def test_a_candidate_inside_both_bands_passes_and_the_bands_are_recorded():
    candidate = {"test_acc": 0.85, "forget_acc": 0.58, "mia_auc": 0.47}
    gates = check_gates(candidate, PRODUCTION, 12, LIMITS, BANDS)
    assert passed(gates)
    assert gates["mia_auc"]["band"]["low"] == 0.35 and gates["forget_acc"]["band"]["high"] == 0.75
    tags = gate_tags(gates)
    assert tags["eul.gate.mia_auc"] == (
        "pass: inside the band: 0.470; band 0.350 to 0.620 (expected 0.480); at most 0.600"
    )
    assert tags["eul.gate.utility"].startswith("pass: test accuracy 0.850 -> 0.850")
    assert all(len(v) < 120 for v in tags.values())


def test_an_over_forgotten_candidate_fails_with_a_reason_a_reviewer_can_read():
    # given a candidate surer that the forget rows are wrong than a model that never saw them
    candidate = {"test_acc": 0.85, "forget_acc": 0.17, "mia_auc": 0.16}
    gates = check_gates(candidate, PRODUCTION, 12, LIMITS, BANDS)
    # then both two-sided gates fail from below, though every one-sided gate passes
    assert not passed(gates)
    assert [n for n, g in gates.items() if not g["passed"]] == ["mia_auc", "forget_acc"]
    reasons = failure_reasons(gates)
    assert "over-forgotten; flipping the score picks them out at 0.840" in reasons[0]
    assert reasons[1].startswith("forget_acc: forget accuracy 0.170 is below")
    tags = gate_tags(gates)
    assert tags["eul.gate.forget_acc"].startswith("FAIL: over-forgotten (below the band): 0.170")
    # and the plot's lines are the bands, narrowed by the fixed limits
    lines = gate_bands(gates)
    assert lines["mia_auc"] == (0.35, 0.6) and lines["forget_acc"] == (0.42, 0.75)


def test_an_under_forgotten_candidate_fails_above_the_band():
    candidate = {"test_acc": 0.85, "forget_acc": 0.8, "mia_auc": 0.58}
    gates = check_gates(candidate, PRODUCTION, 12, LIMITS, BANDS)
    assert [n for n, g in gates.items() if not g["passed"]] == ["forget_acc"]
    assert "above what held-out rows of their kind get" in failure_reasons(gates)[0]


def test_one_sided_bands_and_two_sided_off_leave_the_low_side_ungated():
    low = {"test_acc": 0.85, "forget_acc": 0.1, "mia_auc": 0.1}
    free_text = ReferenceBands("held-out rows", 12, 300, Band(0.35, 0.5, 0.65, two_sided=False),
                               None, 0.01, 2000)  # fmt: skip
    assert passed(check_gates(low, PRODUCTION, 12, LIMITS, free_text))
    off = GateParams(**{**LIMITS.model_dump(), "two_sided": False})
    assert passed(check_gates(low, PRODUCTION, 12, off, BANDS))
    assert "forget_acc" not in check_gates(low, PRODUCTION, 12, off, BANDS)
