"""What the retained data alone says about a labelled forget row.

A model that never saw a forget row answers it from the rest of the data: a row whose label
follows from its words keeps that answer, a memorised odd label (a typo, a mislabel, a
person's idiosyncratic rating) is not reproduced. Pushing every forget row below one half
gets neither right: ordinary rows are pushed past the answer the data supports, and teaching
the layer "this kind of text, not this label" brings back earlier requests' odd labels when
layers are stacked. `RetainedProbe` estimates the retained-data answer directly: a
bag-of-tokens logistic regression fitted on retained rows with the model's own tokenizer,
seconds on the CPU. Its probability of a forget row's label is the level that row is pushed
down to (`EULConfig.reference = "probe"`).

It is a reference, not the served model: it never sees the forget rows' labels, it is fitted
once per request, and it is not stored.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F  # noqa: N812

from eul.data.records import Record


class ProbeError(ValueError):
    """The rows cannot be given a retained-data reference (no labels)."""


@dataclass(frozen=True)
class ProbeConfig:
    """How the probe is fitted. The defaults fit 10,000 rows in a few seconds on one core."""

    max_rows: int = 20_000
    steps: int = 300
    lr: float = 0.05
    weight_decay: float = 1e-4
    seed: int = 0


def _labels(rows: Sequence[Record], what: str) -> list[int]:
    missing = sum(r.label is None for r in rows)
    if missing:
        raise ProbeError(
            f"{missing} of {len(rows)} {what} rows have no label: the probe reference needs a "
            "labelled (classification) data set; use reference='threshold' for free text"
        )
    return [int(r.label) for r in rows]  # type: ignore[arg-type]


def label_options(rows: Sequence[Record]) -> list[str]:
    """The answer text of each label (index = label): what the model chooses among."""
    words: dict[int, str] = {}
    for label, row in zip(_labels(rows, "forget or retained"), rows, strict=True):
        if words.setdefault(label, row.target) != row.target:
            raise ProbeError(
                f"label {label} has more than one answer text; the probe reference "
                "needs one answer per label"
            )
    missing = sorted(set(range(max(words, default=-1) + 1)) - set(words))
    if len(words) < 2 or missing:
        raise ProbeError(
            f"the probe reference needs rows of at least two labels, numbered from 0 "
            f"(found {sorted(words)})"
        )
    return [words[i] for i in range(len(words))]


class RetainedProbe:
    """A logistic regression on the set of token ids of each row."""

    def __init__(
        self, tokenizer, weight: torch.Tensor, bias: torch.Tensor, temperature: float = 1.0
    ) -> None:
        self.tokenizer = tokenizer
        self.weight = weight
        self.bias = bias
        self.temperature = temperature

    @classmethod
    def fit(
        cls,
        tokenizer,
        retained: Sequence[Record],
        n_labels: int,
        config: ProbeConfig | None = None,
    ) -> RetainedProbe:
        """Fit on (a seeded sample of at most `max_rows` of) the retained rows."""
        config = config or ProbeConfig()
        if not retained:
            raise ProbeError("no retained rows to fit the probe reference on")
        rows = list(retained)
        if len(rows) > config.max_rows:
            rows = random.Random(config.seed).sample(rows, config.max_rows)
        labels = torch.tensor(_labels(rows, "retained"))
        if int(labels.max()) >= n_labels or int(labels.min()) < 0:
            raise ProbeError(f"labels must lie in 0..{n_labels - 1}")
        ids, offsets = _bags(tokenizer, rows)
        weight = torch.zeros(len(tokenizer), n_labels, requires_grad=True)
        bias = torch.zeros(n_labels, requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=config.lr)
        for _ in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            logits = F.embedding_bag(ids, weight, offsets, mode="sum") + bias
            loss = F.cross_entropy(logits, labels) + config.weight_decay * (weight**2).sum()
            loss.backward()
            optimizer.step()
        return cls(tokenizer, weight.detach(), bias.detach())

    @torch.no_grad()
    def calibrate(self, heldout: Sequence[Record]) -> RetainedProbe:
        """Set the temperature that best predicts held-out labels (lowest log loss).

        A regularised probe is less sure than it is right; calibrated on rows no model saw,
        its probability of a label is about as confident as an unseen row deserves, which
        is the level a forget row should be left at. No labelled held-out rows: unchanged.
        """
        rows = [r for r in heldout if r.label is not None]
        if not rows:
            return self
        logits = self._logits(rows)
        labels = torch.tensor([int(r.label) for r in rows])  # type: ignore[arg-type]
        grid = torch.logspace(-1, 1, 81)
        losses = [float(F.cross_entropy(logits / t, labels)) for t in grid]
        self.temperature = float(grid[losses.index(min(losses))])
        return self

    @torch.no_grad()
    def probabilities(self, rows: Sequence[Record]) -> torch.Tensor:
        """[rows, labels]: the probe's distribution over labels for each row's text."""
        if not rows:
            return torch.zeros(0, self.bias.numel())
        return torch.softmax(self._logits(rows) / self.temperature, -1)

    def _logits(self, rows: Sequence[Record]) -> torch.Tensor:
        ids, offsets = _bags(self.tokenizer, rows)
        return F.embedding_bag(ids, self.weight, offsets, mode="sum") + self.bias

    def label_probability(self, rows: Sequence[Record]) -> torch.Tensor:
        """[rows]: the probe's probability of each row's own label."""
        labels = torch.tensor(_labels(rows, "forget"), dtype=torch.long)
        return self.probabilities(rows).gather(1, labels[:, None]).squeeze(1)


def _bags(tokenizer, rows: Sequence[Record]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's distinct token ids, flattened, and where each row starts (EmbeddingBag)."""
    ids: list[int] = []
    offsets: list[int] = []
    for row in rows:
        offsets.append(len(ids))
        ids.extend(sorted(set(tokenizer(row.text, add_special_tokens=False)["input_ids"])))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)
