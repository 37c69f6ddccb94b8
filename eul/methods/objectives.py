"""Loss terms of the selective teacher-student objective, each one bounded.

Retained side (follow the teacher, keep doing the task): `kl_to_teacher`, the task loss.
Forget side, as the paper states it: `bounded_negative_kl` and `bounded_negative_lm`. Both
give almost no gradient at the start (student equal to teacher, memorised tokens predicted
with p near 1), so two non-saturating alternatives are provided: `unlikelihood` and `npo`.
Every forget term takes a per-token `gate` that switches it off once a token has reached its
reference level, which is what keeps the forgetting at an oracle-like level instead of zero.
"""

from __future__ import annotations

import math
import random

import torch
from torch.nn import functional as F  # noqa: N812

from eul.model.text_model import IGNORE, TextModel
from eul.model.tokenizer import SENTINELS


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def token_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per target position."""
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    s = F.log_softmax(student_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1)


def kl_to_teacher(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean KL over every target position (content and end of sequence)."""
    return _masked_mean(token_kl(teacher_logits, student_logits), labels != IGNORE)


def topk_kl_to_teacher(
    teacher_idx: torch.Tensor,
    teacher_logp: torch.Tensor,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """KL(teacher || student) over the teacher's top-k tokens plus one bucket for the rest.

    Exact KL between the two distributions coarsened to those k + 1 outcomes, a lower bound
    of the full KL that is tight when the teacher's top-k hold nearly all its mass (k = 8 on
    a trained model: more than 99.9%). It needs only k numbers per position from the teacher.
    """
    student = F.log_softmax(student_logits.float(), dim=-1).gather(-1, teacher_idx)
    teacher = teacher_logp.float()

    def rest(logp: torch.Tensor) -> torch.Tensor:
        return torch.log1p(-logp.exp().sum(-1).clamp(max=1.0 - 1e-6))

    t_rest, s_rest = rest(teacher), rest(student)
    kl = (teacher.exp() * (teacher - student)).sum(-1) + t_rest.exp() * (t_rest - s_rest)
    return _masked_mean(kl, labels != IGNORE)


def forget_gate(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    token_logp: torch.Tensor,
    content_mask: torch.Tensor,
    level: float | torch.Tensor,
    while_top: bool,
) -> torch.Tensor:
    """Which forget tokens to push: content tokens still more likely than `level` (one value,
    or one per row as a [rows, 1] tensor), and with `while_top` also those still ranked first.

    With a vocabulary-sized output a token well below one half can still be the one greedy
    decoding picks; a memorised secret then comes back out although it "passed" the level.
    """
    gate = content_mask & (token_logp.detach() > level)
    if while_top:
        gate = gate | (content_mask & (student_logits.detach().argmax(-1) == labels))
    return gate


def bounded_negative_kl(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    gate: torch.Tensor,
    bound: float,
) -> torch.Tensor:
    """-min(KL, bound) on gated tokens: move away from the teacher, but not without limit."""
    kl = token_kl(teacher_logits, student_logits).clamp(max=bound)
    return -_masked_mean(kl, gate)


def unlikelihood(
    token_logp: torch.Tensor, gate: torch.Tensor, over: torch.Tensor | None = None
) -> torch.Tensor:
    """The log-odds log p - log(1 - p) on gated tokens: -log(1 - p), the unlikelihood term,
    plus log p.

    Its gradient in the token's own logit is 1 at any p. -log(1 - p) alone has gradient p:
    strong near p = 1 (a memorised label), but close to nothing for a memorised summary token
    at p = 0.003 that has to go to the 0.0005 unseen rows give it (a weak model on free
    text), where training moved nothing. Averaged over the tokens in `over` (default: the
    gated ones), so that the push fades as tokens reach their level.
    """
    p = token_logp.exp().clamp(max=1.0 - 1e-6)
    values = (token_logp - torch.log1p(-p)) * gate.to(p.dtype)
    return values.sum() / (over if over is not None else gate).to(p.dtype).sum().clamp(min=1.0)


def answer_unlikelihood(
    answer_logp: torch.Tensor, levels: torch.Tensor, supported: torch.Tensor, hold: float
) -> torch.Tensor:
    """Per row, on log q, the label's share of the answers ([rows]): -log(1 - q) while q is
    above the row's level, and -log q while a row whose label the retained data supports
    (`supported`) is under `hold`.

    The pull keeps a subject's ordinary rows answered while its odd labels are pushed away:
    the rows share the subject's words, and a model that never saw them would answer them.
    Averaged over the rows either term acts on.
    """
    logq = answer_logp.detach()
    push = logq > levels
    pull = supported & (logq < math.log(hold)) if hold > 0 else torch.zeros_like(push)
    acting = push | pull
    if not acting.any():
        return answer_logp.sum() * 0.0
    q = answer_logp.exp().clamp(max=1.0 - 1e-6)
    values = -torch.log1p(-q) * push - answer_logp * pull
    return values.sum() / acting.sum()


def npo(
    token_logp: torch.Tensor, teacher_token_logp: torch.Tensor, gate: torch.Tensor, beta: float
) -> torch.Tensor:
    """Negative preference optimisation on the gated tokens of each sequence.

    (2 / beta) * softplus(beta * log(pi / pi_ref)); bounded below by zero, so it stops
    pushing once the student is far below the teacher.
    """
    gate = gate.to(token_logp.dtype)
    ratio = ((token_logp - teacher_token_logp) * gate).sum(-1)
    has_tokens = gate.sum(-1) > 0
    losses = (2.0 / beta) * F.softplus(beta * ratio)
    return losses[has_tokens].mean() if has_tokens.any() else ratio.sum() * 0.0


def span_corrupt(
    tm: TextModel, texts: list[str], rng: random.Random, noise: float = 0.15, mean_span: int = 3
) -> dict[str, torch.Tensor] | None:
    """A masked-LM batch on the forget inputs (T5 span corruption; plain LM for decoders).

    Returns None when the tokenizer has no sentinel tokens to mark spans with.
    """
    tok = tm.tokenizer
    if not tm.is_encoder_decoder:
        return tm.batch(["" for _ in texts], texts)
    sentinel_ids = tok.convert_tokens_to_ids(list(SENTINELS))
    if any(i is None or i == tok.unk_token_id for i in sentinel_ids):
        return None
    inputs, targets = [], []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"][: tm.max_input_len - 1]
        n = len(ids)
        n_noise = max(1, round(n * noise))
        masked = [False] * n
        while sum(masked) < n_noise:
            start = rng.randrange(n)
            for i in range(start, min(n, start + mean_span)):
                masked[i] = True
        new_input, new_target, k, i = [], [], 0, 0
        while i < n:
            if masked[i] and k < len(sentinel_ids):
                new_input.append(sentinel_ids[k])
                new_target.append(sentinel_ids[k])
                while i < n and masked[i]:
                    new_target.append(ids[i])
                    i += 1
                k += 1
            else:
                new_input.append(ids[i])
                i += 1
        inputs.append([*new_input, tok.eos_token_id])
        targets.append([*new_target, tok.eos_token_id])
    return tm.batch_from_ids(inputs, targets)
