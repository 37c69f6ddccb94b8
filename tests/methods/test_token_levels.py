"""Free text: each forget token pushed to what unseen rows give that token, not further."""

from __future__ import annotations

import math

import pytest

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
    eul = get_method("eul", config=EULConfig(epochs=1, retained_per_epoch=32, token_levels=True))
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
    # and off (the default), there is no table: one level for every token
    plain = get_method("eul", config=EULConfig(epochs=1, retained_per_epoch=32))
    plain.run(tiny_trained.copy(), task, progress=False)
    assert plain._token_table is None
