"""Reference bands: what held-out rows of the forget rows' kind show, at the request's size."""

from __future__ import annotations

import numpy as np
import pytest

from eul.evaluate.bands import (
    Band,
    BandConfig,
    ReferenceBands,
    StandIns,
    band_verdict,
    draw_bands,
    label_log_odds,
)

RNG = np.random.default_rng(0)
# held-out rows: most ordinary (sure of their label, right, high membership score), a tenth
# odd (the retained data gives their label low odds; the model gets them wrong, low score)
ODD = RNG.random(1000) < 0.1
HELDOUT_ODDS = np.where(ODD, RNG.normal(-2.5, 0.5, 1000), RNG.normal(2.5, 0.5, 1000))
HELDOUT_SCORES = np.where(ODD, RNG.normal(-3.0, 0.5, 1000), RNG.normal(-0.2, 0.1, 1000))
HELDOUT_CORRECT = ~ODD
STAND_INS = StandIns.heldout(HELDOUT_SCORES, HELDOUT_CORRECT, HELDOUT_ODDS)


def test_without_odds_the_band_is_held_out_rows_against_held_out_rows():
    mia, acc = draw_bands(HELDOUT_SCORES, HELDOUT_CORRECT, forget_rows=20)
    # any 20 held-out rows against the rest: chance, both ways, and the held-out accuracy
    assert mia.low < 0.5 < mia.high and mia.expected == pytest.approx(0.5, abs=0.03)
    assert acc.expected == pytest.approx(HELDOUT_CORRECT.mean(), abs=0.05)
    # free text has no reference for the low side: it is drawn but not gated
    assert mia.two_sided is False
    # a larger request leaves chance less room
    wide, _ = draw_bands(HELDOUT_SCORES, None, forget_rows=5)
    narrow, _ = draw_bands(HELDOUT_SCORES, None, forget_rows=200)
    assert wide.high - wide.low > 2 * (narrow.high - narrow.low)


def test_odd_forget_rows_are_stood_in_for_by_odd_held_out_rows():
    # given a request of 10 ordinary rows and 10 rows whose label the retained data doubts
    forget_odds = np.r_[np.full(10, 2.5), np.full(10, -2.5)]
    mia, acc = draw_bands(
        HELDOUT_SCORES, HELDOUT_CORRECT, 20, forget_odds, STAND_INS, BandConfig(seed=1)
    )
    # then a model that never saw them gets about half right and ranks the odd half lowest
    assert acc.expected == pytest.approx(0.5, abs=0.05)
    assert mia.expected < 0.4 and mia.two_sided
    # and a request of ordinary rows only is expected where ordinary held-out rows are
    ordinary, ordinary_acc = draw_bands(
        HELDOUT_SCORES, HELDOUT_CORRECT, 20, np.full(20, 2.5), STAND_INS
    )
    assert ordinary_acc.low > 0.9 and ordinary.expected > mia.expected + 0.1


def test_flipped_forget_rows_are_stood_in_for_by_relabelled_held_out_rows():
    # given held-out rows that are all ordinary, and each again with the other label: the
    # retained data goes against that label, and the model gives it a low score
    n = 400
    ordinary = RNG.normal(-0.2, 0.1, n)
    relabelled = RNG.normal(-3.0, 0.5, n)
    stand_ins = StandIns(
        np.r_[ordinary, relabelled],
        np.r_[np.ones(n), np.zeros(n)],
        np.r_[np.full(n, 2.5), np.full(n, -2.5)],
        np.r_[np.arange(n), np.arange(n)],
    )
    flipped = np.full(10, -2.5)
    mia, acc = draw_bands(ordinary, np.ones(n), 10, flipped, stand_ins)
    # then a model that never saw 10 flipped rows ranks them under every held-out row and
    # gets them wrong, where the held-out rows as labelled would say chance and right
    assert mia.high < 0.05 and acc.high == 0.0
    as_labelled, _ = draw_bands(ordinary, np.ones(n), 10, flipped, StandIns.heldout(
        ordinary, np.ones(n), np.full(n, 2.5)
    ))  # fmt: skip
    assert as_labelled.low > 0.2


def test_verdicts_name_the_side_a_value_falls_out_on():
    band = Band(0.3, 0.45, 0.6)
    assert band_verdict(0.5, band) == (True, "")
    assert band_verdict(0.7, band) == (False, "above")
    assert band_verdict(0.1, band) == (False, "below")
    assert band_verdict(float("nan"), band) == (False, "missing")
    # a one-sided band lets anything under its top through
    assert band_verdict(0.1, Band(0.3, 0.45, 0.6, two_sided=False)) == (True, "")


def test_bands_round_trip_through_json_rounded():
    bands = ReferenceBands(
        "probe", 12, 300, Band(0.312345678, 0.45, 0.6), None, quantile=0.01, resamples=2000
    )
    data = bands.to_json()
    assert data["mia_auc"]["low"] == 0.3123 and data["forget_acc"] is None
    assert ReferenceBands.from_json(data).mia_auc.low == 0.3123


def test_bad_settings_and_too_few_rows_are_refused():
    with pytest.raises(ValueError, match="quantile"):
        BandConfig(quantile=0.6)
    with pytest.raises(ValueError, match="at least one forget row"):
        draw_bands(HELDOUT_SCORES, None, forget_rows=0)
    assert label_log_odds([0.5])[0] == pytest.approx(0.0)
    assert np.isfinite(label_log_odds([0.0, 1.0])).all()


def test_a_row_the_probe_backs_is_not_stood_in_for_by_a_relabelled_one():
    # given a weak probe: every held-out row, as labelled or relabelled, has odds near 0
    n = 200
    stand_ins = StandIns(
        np.r_[np.full(n, -0.2), np.full(n, -3.0)],
        np.r_[np.ones(n), np.zeros(n)],
        np.r_[np.full(n, 0.1), np.full(n, -0.1)],
        np.r_[np.arange(n), np.arange(n)],
        np.r_[np.zeros(n, bool), np.ones(n, bool)],
    )
    # then rows it backs (odds 0.05) are expected answered like held-out rows, not at chance
    backed, backed_acc = draw_bands(np.full(n, -0.2), np.ones(n), 10, np.full(10, 0.05), stand_ins)
    assert backed_acc.low == 1.0 and backed.expected == pytest.approx(0.5, abs=0.01)
    # and rows it does not back (odds -0.05) may be stood in for by relabelled rows
    doubted, doubted_acc = draw_bands(
        np.full(n, -0.2), np.ones(n), 10, np.full(10, -0.05), stand_ins
    )
    assert doubted_acc.expected < 0.2
