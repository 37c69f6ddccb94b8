"""Where forget tokens are pushed to: which reference a run uses, and on free text the level
of each token, from what unseen rows give it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from eul.data.records import Record


def resolve_reference(reference: str, forget: Sequence[Record], retained: Sequence[Record]) -> str:
    """`auto`: the probe where every row is labelled with one answer per label (the retained
    data's own answer for each row), else the threshold with the unseen rows' level (free
    text). Any other setting is kept as it is."""
    if reference != "auto":
        return reference
    from eul.methods.reference import ProbeError, label_options

    rows = [*forget, *retained]
    if not rows or any(r.label is None for r in rows):
        return "threshold"
    try:
        label_options(rows)
    except ProbeError:
        return "threshold"
    return "probe"


def token_level_table(
    tokens: Sequence[tuple[Sequence[int], Sequence[float]]],
    vocab: int,
    fallback: float,
    min_count: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The level of each vocabulary token: the median log-probability unseen rows give it
    where they hold it at least `min_count` times, else `fallback`; and which tokens had
    their own ([vocab] floats, [vocab] bools).

    A word an unseen summary also gets (a template word, a name the dialogue gives) stays as
    likely as it is there; a token no unseen row shows (a planted secret) goes below the
    fallback, as without per-token levels.
    """
    seen: dict[int, list[float]] = {}
    for ids, values in tokens:
        for i, v in zip(ids, values, strict=True):
            seen.setdefault(int(i), []).append(float(v))
    levels = torch.full((vocab,), float(fallback))
    known = torch.zeros(vocab, dtype=torch.bool)
    for i, values in seen.items():
        if len(values) >= min_count and 0 <= i < vocab:
            values.sort()
            levels[i] = values[len(values) // 2]
            known[i] = True
    return levels, known


def probe_levels(
    tokenizer,
    forget: Sequence[Record],
    retained: Sequence[Record],
    heldout: Sequence[Record],
    ceiling: float,
    floor: float,
    margin: float,
) -> tuple[dict[str, float], set[str]]:
    """Per forget row, its level under the probe reference, and the rows the probe backs.

    A row whose label the retained data alone also gives (the probe's top answer,
    `eul.methods.reference`) gets `ceiling`, the unseen rows' level; any other row the
    probe's probability of its label divided by `margin`, floored at `floor` (never above
    `ceiling`).
    """
    from eul.methods.reference import RetainedProbe

    n_labels = 1 + max(int(r.label or 0) for r in [*forget, *retained])
    probe = RetainedProbe.fit(tokenizer, retained, n_labels).calibrate(heldout)
    dist = probe.probabilities(list(forget))
    labels = torch.tensor([int(r.label) for r in forget])  # type: ignore[arg-type]
    supported = {
        r.record_id
        for r, top in zip(forget, dist.argmax(1).tolist(), strict=True)
        if top == r.label
    }
    p = dist.gather(1, labels[:, None]).squeeze(1).tolist()
    levels = {
        r.record_id: ceiling
        if r.record_id in supported
        else min(math.log(max(q / margin, floor)), ceiling)
        for r, q in zip(forget, p, strict=True)
    }
    return levels, supported
