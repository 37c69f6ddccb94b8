"""The retained-data reference: what a model that never saw a forget row would answer."""

from __future__ import annotations

import math

import pytest

from eul.data.records import LABEL_WORDS, Record
from eul.methods import EULConfig, ForgetTask, get_method
from eul.methods.levels import resolve_reference
from eul.methods.reference import ProbeConfig, ProbeError, RetainedProbe, label_options


def _row(i: int, text: str, label: int | None, memorised: bool = False) -> Record:
    target = {None: "a summary", 0: "negative", 1: "positive"}[label]
    return Record(f"r{i}", f"s{i}", text, target, label, memorised)


def test_the_probe_learns_the_retained_rule_and_disowns_an_odd_label(tiny_trained) -> None:
    # given retained rows whose label follows from one word
    retained = [
        _row(i, f"the meal was {'great' if i % 2 else 'awful'} today", i % 2) for i in range(60)
    ]
    probe = RetainedProbe.fit(tiny_trained.tokenizer, retained, n_labels=2)
    # when it scores a forget row with the supported label and one with the flipped label
    supported = _row(100, "the meal was great today", 1)
    flipped = _row(101, "the meal was great today", 0, memorised=True)
    p = probe.label_probability([supported, flipped])
    # then it backs the first and not the second, and its two answers sum to one
    assert p[0] > 0.9
    assert p[1] < 0.1
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)


def test_the_probe_is_fitted_on_at_most_max_rows(tiny_trained) -> None:
    retained = [_row(i, f"word{i % 7} and more", i % 2) for i in range(50)]
    small = RetainedProbe.fit(tiny_trained.tokenizer, retained, 2, ProbeConfig(max_rows=10))
    full = RetainedProbe.fit(tiny_trained.tokenizer, retained, 2)
    rows = retained[:5]
    assert not small.probabilities(rows).allclose(full.probabilities(rows))
    assert small.probabilities([]).shape == (0, 2)


def test_unlabelled_rows_are_refused_with_the_fix(tiny_trained) -> None:
    rows = [_row(1, "we met at noon", None)]
    with pytest.raises(ProbeError, match="reference='threshold'"):
        RetainedProbe.fit(tiny_trained.tokenizer, rows, 2)
    with pytest.raises(ProbeError, match="no retained rows"):
        RetainedProbe.fit(tiny_trained.tokenizer, [], 2)


def test_with_the_probe_each_forget_row_gets_its_own_level(tiny_trained, tiny_records) -> None:
    # given a forget set of ordinary rows and rows with a flipped label
    train, heldout, _ = tiny_records
    flipped_rows = [r for r in train if r.memorised]
    forget = flipped_rows + [r for r in train if not r.memorised][: len(flipped_rows)]
    gone = {r.subject_id for r in forget}
    retained = [r for r in train if r.subject_id not in gone]
    eul = get_method("eul", config=EULConfig(reference="probe"))
    eul._unseen_level = eul._measure_unseen_level(tiny_trained, heldout)
    # when the levels are set from the probe
    levels = eul._probe_levels(tiny_trained, forget, retained)
    # then flipped rows must go lower than ordinary ones, none below the floor, none above
    # what unseen rows get; without the probe every row shares one level
    flipped = [levels[r.record_id] for r in forget if r.memorised]
    ordinary = [levels[r.record_id] for r in forget if not r.memorised]
    assert sum(flipped) / len(flipped) < math.log(0.5) < sum(ordinary) / len(ordinary)
    assert sum(v < math.log(0.5) for v in flipped) > 0.8 * len(flipped)
    assert sum(v < math.log(0.5) for v in ordinary) < 0.3 * len(ordinary)
    assert min(levels.values()) >= math.log(0.05) - 1e-6
    assert max(levels.values()) <= eul._unseen_level + 1e-6
    # rows the probe backs are only made as unsure as unseen rows; the others go at least
    # `probe_margin` (4) times below the probe's probability, which is under one half
    backed = [v for rid, v in levels.items() if rid in eul._supported]
    odd = [v for rid, v in levels.items() if rid not in eul._supported]
    assert backed and odd
    assert all(v == eul._unseen_level for v in backed)
    assert all(v <= math.log(0.5 / 4) + 1e-6 for v in odd)
    plain = get_method("eul", reference="threshold")
    assert plain._probe_levels(tiny_trained, forget, retained) is None


def test_auto_is_the_probe_for_labelled_rows_and_the_threshold_for_free_text() -> None:
    labelled = [_row(1, "good", 1), _row(2, "bad", 0), _row(3, "fine", 1)]
    free = [_row(i, f"we met at {i}", None) for i in range(3)]
    assert resolve_reference("auto", labelled[:1], labelled[1:]) == "probe"
    assert resolve_reference("auto", free[:1], free[1:]) == "threshold"
    # one label only, or two answers for one label: the probe cannot be fitted
    assert resolve_reference("auto", labelled[:1], labelled[2:]) == "threshold"
    odd = Record("r9", "s9", "good", "great", 1, False)
    assert resolve_reference("auto", [odd], labelled) == "threshold"
    # a setting other than auto is kept
    assert resolve_reference("none", labelled[:1], labelled[1:]) == "none"
    assert EULConfig().reference == "auto"


def test_the_probe_reference_on_free_text_fails_before_training(tiny_model) -> None:
    rows = [_row(i, f"we met at {i}", None) for i in range(4)]
    task = ForgetTask(forget=rows[:2], retained=rows[2:], name="req")
    with pytest.raises(ProbeError, match="labelled"):
        get_method("eul", config=EULConfig(reference="probe")).run(tiny_model, task, False)
    assert "req" not in tiny_model.unlearning_layers().layers


def test_label_options_are_the_answer_of_each_label() -> None:
    rows = [_row(1, "good", 1), _row(2, "bad", 0), _row(3, "fine", 1)]
    assert label_options(rows) == ["negative", "positive"]
    with pytest.raises(ProbeError, match="at least two labels"):
        label_options(rows[:1])
    odd = Record("r9", "s9", "good", "great", 1, False)
    with pytest.raises(ProbeError, match="more than one answer"):
        label_options([*rows, odd])


def test_the_probe_reference_forgets_odd_labels_among_the_answers(tiny_trained, tiny_records):
    # given whole subjects to forget, some of their rows with a memorised flipped label
    train, heldout, _ = tiny_records
    flipped_subjects = {r.subject_id for r in train if r.memorised}
    forget = [r for r in train if r.subject_id in flipped_subjects]
    retained = [r for r in train if r.subject_id not in flipped_subjects]
    odd = [r for r in forget if r.memorised]
    ordinary = [r for r in forget if not r.memorised]
    tm = tiny_trained.copy()

    def chosen(rows: list[Record]) -> float:
        picks = tm.choose([r.text for r in rows], LABEL_WORDS)
        return sum(p == r.label for p, r in zip(picks, rows, strict=True)) / len(rows)

    assert chosen(odd) > 0.8  # memorised
    # when a layer is trained with the probe reference
    config = EULConfig(reference="probe", lam=0.0, keep_weight=0.0)
    eul = get_method("eul", config=config)
    task = ForgetTask(forget=forget, retained=retained, heldout=heldout, name="req")
    result = eul.run(tm, task, False)
    # then the odd labels are no longer the chosen answers while the ordinary rows' are,
    # and the stop rule measured rows by their label's share of the two answers
    assert chosen(odd) < 0.3
    assert chosen(ordinary) > 0.7
    answers = eul._measured_answer_logprobs(tm, forget)
    assert all(v <= 0.0 for v in answers)
    picks = tm.choose([r.text for r in forget], LABEL_WORDS)
    assert [v > math.log(0.5) for v in answers] == [
        p == r.label for p, r in zip(picks, forget, strict=True)
    ]
    assert 0.0 <= result.history[-1]["share_above_level"] <= 1.0


def test_probe_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="probe_margin"):
        EULConfig(probe_margin=0.5)
    with pytest.raises(ValueError, match="probe_hold"):
        EULConfig(probe_hold=1.0)
