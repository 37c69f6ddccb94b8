"""Free text: each forget token pushed to what unseen rows give that token, not further."""

from __future__ import annotations

import math

import pytest
import torch

from eul.data.records import Record
from eul.methods import EULConfig, ForgetTask, get_method
from eul.methods.levels import token_level_table


def test_tokens_unseen_rows_show_often_get_their_median_and_others_the_fallback():
    # given unseen rows that give token 5 three times and token 9 once
    tokens = [([5, 9], [-0.1, -4.0]), ([5], [-0.3]), ([5, 7], [-0.2, -1.0])]
    levels, known = token_level_table(tokens, vocab=12, fallback=-0.7, min_count=3)
    # then token 5 keeps its unseen median and every other token gets the fallback
    assert levels[5].item() == pytest.approx(-0.2) and bool(known[5])
    assert levels[9].item() == pytest.approx(-0.7) and not bool(known[9])
    assert int(known.sum()) == 1 and levels.shape == (12,)


def _dialogue(i: int, summary: str) -> Record:
    return Record(f"d{i}", f"s{i}", f"dialogue {i}: they talk about plans", summary, None, False)


def test_free_text_forgetting_leaves_template_words_at_the_unseen_level(tiny_trained):
    # given free text: summaries that share a template, one request holding a rare code
    template = "they agree to meet"
    retained = [_dialogue(i, f"{template} at {i % 5}") for i in range(40)]
    heldout = [_dialogue(100 + i, f"{template} at {i % 5}") for i in range(20)]
    forget = [_dialogue(200, f"{template} with code zq81xv")]
    task = ForgetTask(forget=forget, retained=retained, heldout=heldout, name="req")
    eul = get_method("eul", config=EULConfig(epochs=1, retained_per_epoch=32))
    eul.run(tiny_trained.copy(), task, progress=False)
    # then the run used the threshold with per-token levels (no labels: no probe)
    assert eul.reference == "threshold"
    levels, known = eul._token_table
    ids, _ = tiny_trained.content_tokens(forget)[0]
    template_ids = set(tiny_trained.content_tokens(heldout[:1])[0][0])
    # the template's tokens have levels of their own; the code's tokens (never in an unseen
    # row) fall back to the single level of the threshold
    assert any(bool(known[i]) for i in ids if i in template_ids)
    fallback = min(math.log(0.5), eul._unseen_level)
    assert all(levels[i].item() == pytest.approx(fallback) for i in ids if not known[i])
    # and off, there is no table: one level for every token
    plain = get_method("eul", config=EULConfig(epochs=1, retained_per_epoch=32, token_levels=False))
    plain.run(tiny_trained.copy(), task, progress=False)
    assert plain._token_table is None


def test_a_row_likelier_than_the_median_unseen_row_has_every_token_pushed():
    # given a run whose unseen rows' median mean log-probability is -2
    eul = get_method("eul")
    eul._row_level = -2.0
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # a row whose tokens are each unlikely but together above it, and one under it
    logp = torch.tensor([[-1.5, -2.0, 0.0], [-3.0, -2.5, -1.0]])
    rows = eul._rows_above(logp, mask)
    # then every content token of the first row is pushed, none of the second's
    assert rows.tolist() == [[True, True, False], [False, False, False]]
    # and without a row level (labelled rows, or row_levels off) none is
    eul._row_level = None
    assert not eul._rows_above(logp, mask).any()


def test_free_text_measures_the_row_level_from_unseen_rows(tiny_trained):
    retained = [_dialogue(i, f"they agree to meet at {i % 5}") for i in range(40)]
    heldout = [_dialogue(100 + i, f"they plan a trip to {i % 7}") for i in range(21)]
    forget = [_dialogue(200, "they agree to meet with code zq81xv")]
    task = ForgetTask(forget=forget, retained=retained, heldout=heldout, name="req")
    config = EULConfig(epochs=1, retained_per_epoch=32)
    eul = get_method("eul", config=config)
    eul.run(tiny_trained.copy(), task, progress=False)
    # then the row level is the median of the unseen rows' mean content log-probability
    means = sorted(sum(v) / len(v) for _, v in tiny_trained.content_tokens(heldout))
    assert eul._row_level == pytest.approx(means[len(means) // 2])
    # and off, there is none
    off = get_method("eul", config=EULConfig(epochs=1, retained_per_epoch=32, row_levels=False))
    off.run(tiny_trained.copy(), task, progress=False)
    assert off._row_level is None


def test_free_text_forget_steps_keep_up_with_the_retained_steps():
    eul = get_method("eul")  # forget batches of 8, retained batches of 32
    # 13 summaries: 2 forget steps against 24 retained ones, so three passes (6 steps)
    eul._free_text = True
    assert eul._forget_passes(13, 768) == 3
    # a forget set that already has a quarter of the retained steps takes one pass
    assert eul._forget_passes(87, 768) == 1
    # labelled rows take one pass whatever their number
    eul._free_text = False
    assert eul._forget_passes(1, 768) == 1
    # and a share of 0 is one pass
    none = get_method("eul", config=EULConfig(forget_step_share=0.0))
    none._free_text = True
    assert none._forget_passes(1, 768) == 1
