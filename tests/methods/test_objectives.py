"""Forget terms: bounded, and non-saturating where the paper's terms stall."""

from __future__ import annotations

import random

import torch

from eul.data.records import LABEL_WORDS
from eul.methods import objectives
from eul.model.text_model import ModelSpec, TextModel


def _logit_grad(loss_fn, p_label: float) -> float:
    """|d loss / d logit of the label| for a two-way softmax at p(label) = p_label."""
    logit = torch.tensor([torch.logit(torch.tensor(p_label)).item(), 0.0], requires_grad=True)
    logp = torch.log_softmax(logit, -1)[0]
    loss_fn(logp).backward()
    return abs(logit.grad[0].item())


def test_unlikelihood_keeps_its_gradient_when_the_label_is_memorised() -> None:
    # given a memorised label (p = 0.999)
    gate = torch.ones(1, 1, dtype=torch.bool)
    ul = _logit_grad(lambda lp: objectives.unlikelihood(lp.view(1, 1), gate), 0.999)
    negated_ce = _logit_grad(lambda lp: lp, 0.999)  # minimising log p = negated CE
    # then unlikelihood pushes ~1000x harder than the paper's negated loss
    assert ul > 0.9
    assert negated_ce < 0.01


def test_unlikelihood_keeps_its_gradient_on_an_unlikely_token() -> None:
    # given a memorised free-text token a weak model gives p = 0.003 (unseen rows: 0.0005)
    gate = torch.ones(1, 1, dtype=torch.bool)
    pushed = _logit_grad(lambda lp: objectives.unlikelihood(lp.view(1, 1), gate), 0.003)
    plain = _logit_grad(lambda lp: -torch.log1p(-lp.exp()), 0.003)  # -log(1 - p) alone
    # then the log-odds push is as strong as at p near 1; -log(1 - p) alone all but stops
    assert pushed > 0.99
    assert plain < 0.01


def test_gate_switches_the_forget_term_off() -> None:
    logp = torch.log(torch.tensor([[0.9, 0.1]]))
    closed = torch.zeros(1, 2, dtype=torch.bool)
    assert objectives.unlikelihood(logp, closed).item() == 0.0


def test_negative_kl_is_bounded() -> None:
    teacher = torch.tensor([[[10.0, -10.0]]])
    far_student = torch.tensor([[[-10.0, 10.0]]])
    gate = torch.ones(1, 1, dtype=torch.bool)
    loss = objectives.bounded_negative_kl(teacher, far_student, gate, bound=5.0)
    assert loss.item() == -5.0


def test_kl_to_teacher_is_zero_for_identical_outputs_and_ignores_padding() -> None:
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    assert objectives.kl_to_teacher(logits, logits, labels).abs().item() < 1e-6


def test_npo_is_non_negative_and_falls_as_the_student_moves_away() -> None:
    teacher = torch.log(torch.tensor([[0.9]]))
    gate = torch.ones(1, 1, dtype=torch.bool)
    same = objectives.npo(teacher, teacher, gate, beta=0.5)
    away = objectives.npo(torch.log(torch.tensor([[0.1]])), teacher, gate, beta=0.5)
    assert 0 < away.item() < same.item()


def test_span_corruption_masks_spans_with_sentinels() -> None:
    texts = ["the food was great and the staff were lovely to us all evening"]
    tm = TextModel.create(
        texts + list(LABEL_WORDS),
        ModelSpec(vocab_size=200, d_model=16, num_layers=1, num_heads=2, d_ff=32),
    )
    batch = objectives.span_corrupt(tm, texts, random.Random(0))
    sentinel = tm.tokenizer.convert_tokens_to_ids("<extra_id_0>")
    assert sentinel in batch["input_ids"][0].tolist()
    assert batch["labels"][0, 0].item() == sentinel
    assert batch["input_ids"].shape[1] < len(tm.tokenizer(texts[0])["input_ids"])


def test_top_k_kl_matches_the_full_kl_when_k_covers_the_vocabulary() -> None:
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    labels = torch.tensor([[1, 2, -100], [3, 4, 5]])
    full = objectives.kl_to_teacher(teacher, student, labels)
    top = torch.log_softmax(teacher, -1).topk(6, -1)
    assert torch.allclose(
        objectives.topk_kl_to_teacher(top.indices, top.values, student, labels), full, atol=1e-5
    )
    small = torch.log_softmax(teacher, -1).topk(2, -1)
    coarse = objectives.topk_kl_to_teacher(small.indices, small.values, student, labels)
    assert 0 <= coarse.item() <= full.item() + 1e-6
    same = objectives.topk_kl_to_teacher(small.indices, small.values, teacher, labels)
    assert abs(same.item()) < 1e-5


def test_the_forget_gate_keeps_pushing_a_token_greedy_decoding_still_picks() -> None:
    # given two target positions over a 4-token vocabulary, both at p(label) = 0.4:
    # at the first the label is still the most likely token, at the second it is not
    probs = torch.tensor([[[0.4, 0.2, 0.2, 0.2], [0.4, 0.6, 0.0, 0.0]]])
    logits = probs.clamp(min=1e-6).log()
    labels = torch.tensor([[0, 0]])
    logp = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    content = torch.ones(1, 2, dtype=torch.bool)
    level = torch.log(torch.tensor(0.5)).item()
    # when gated by the level alone, neither is pushed (both are below one half)
    by_level = objectives.forget_gate(logits, labels, logp, content, level, while_top=False)
    assert by_level.tolist() == [[False, False]]
    # and when also gated while ranked first, only the first is
    by_rank = objectives.forget_gate(logits, labels, logp, content, level, while_top=True)
    assert by_rank.tolist() == [[True, False]]
    # and a padding position is never pushed
    padded = objectives.forget_gate(
        logits, labels, logp, torch.tensor([[False, True]]), level, while_top=True
    )
    assert padded.tolist() == [[False, False]]


def test_answer_unlikelihood_pushes_rows_above_their_level_and_holds_supported_ones() -> None:
    # given four rows: above its level, at rest, supported but slipping, unsupported and low
    logq = torch.log(torch.tensor([0.9, 0.3, 0.4, 0.1])).requires_grad_()
    levels = torch.log(torch.tensor([0.2, 0.5, 0.8, 0.5]))
    supported = torch.tensor([False, False, True, False])
    # when the loss is taken and differentiated
    loss = objectives.answer_unlikelihood(logq, levels, supported, hold=0.7)
    loss.backward()
    # then the first row is pushed down, the third pulled up, the others left alone
    assert logq.grad[0] > 0
    assert logq.grad[2] < 0
    assert logq.grad[1] == 0 and logq.grad[3] == 0
    # and with nothing to act on (or the hold off for a row only it would act on) it is zero
    rows = logq.detach()
    assert objectives.answer_unlikelihood(rows[1:2], levels[1:2], supported[1:2], 0.7) == 0
    assert objectives.answer_unlikelihood(rows[2:3], levels[2:3], supported[2:3], 0.0) == 0
