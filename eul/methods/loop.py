"""Pieces of EUL's training loop: shuffled batches, the teacher's cached answers, the step.

Kept apart from `eul.methods.eul`, which holds the objectives' wiring and the stopping rule.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from eul.data.records import Record
from eul.model.text_model import IGNORE, TextModel


def batches(records: list[Record], size: int, rng: random.Random) -> list[list[Record]]:
    """The records in batches of `size`, in an order `rng` draws (the list itself is kept)."""
    order = records[:]
    rng.shuffle(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


class TeacherCache:
    """The teacher's top-k log-probabilities on the retained sample, computed once.

    The teacher is frozen and each retained row is visited several times, so keeping its
    top-k distribution saves one forward pass per retained step, at k numbers per target
    position (a few hundred KB), not a vocabulary-sized tensor. It stays on the model's
    device, where the student's logits are compared with it.
    """

    def __init__(self, tm: TextModel, records: list[Record], k: int, batch_size: int = 32) -> None:
        self.rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.k = k
        if k <= 0:
            return
        tm.model.eval()
        with torch.no_grad():
            for start in range(0, len(records), batch_size):
                chunk = records[start : start + batch_size]
                batch = tm.batch([r.text for r in chunk], [r.target for r in chunk])
                logp = torch.log_softmax(tm.logits(batch).float(), -1)
                top = logp.topk(k, dim=-1)
                for row, record in enumerate(chunk):
                    keep = batch["labels"][row] != IGNORE
                    self.rows[record.record_id] = (top.indices[row][keep], top.values[row][keep])

    def lookup(
        self, chunk: list[Record], labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Teacher top-k (indices, log-probs) laid out like `labels` (and on its device), or
        None if not cached."""
        if not chunk or any(r.record_id not in self.rows for r in chunk):
            return None
        idx = torch.zeros(*labels.shape, self.k, dtype=torch.long, device=labels.device)
        logp = torch.full((*labels.shape, self.k), -30.0, device=labels.device)
        for row, record in enumerate(chunk):
            positions = (labels[row] != IGNORE).nonzero().squeeze(-1)
            idx[row, positions], logp[row, positions] = self.rows[record.record_id]
        return idx, logp


class DivergedError(RuntimeError):
    """Training went non-finite (NaN or infinite loss or weights): the layer is refused, never
    saved, fused or deployed. Deterministic, so retrying the same settings does not help."""


class Stepper:
    """One optimiser step at a time on the new layer, counted against `max_steps`.

    Every step checks the loss before it and the layer's weights after it: a diverged run
    stops there with `DivergedError` instead of writing NaN weights that would fuse into
    every later version.
    """

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        bar: tqdm,
        max_steps: int | None,
        penalty: Callable[[], torch.Tensor] | None,
    ) -> None:
        self.params, self.optimizer, self.scheduler, self.bar = params, optimizer, scheduler, bar
        self.max_steps, self.penalty = max_steps, penalty
        self.steps = 0

    def step(self, loss: torch.Tensor) -> None:
        if self.penalty is not None:
            loss = loss + self.penalty()
        if not bool(torch.isfinite(loss.detach()).all()):
            self._diverged(self.steps + 1, f"the loss is {loss.detach().float().sum().item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.steps += 1
        self.bar.update()
        with torch.no_grad():  # one check (one device sync) for all of the layer's weights
            finite = torch.stack([torch.isfinite(p).all() for p in self.params]).all()
        if not bool(finite):
            self._diverged(self.steps, "the layer's weights are not finite after it")

    def _diverged(self, step: int, what: str) -> None:
        raise DivergedError(
            f"training diverged at step {step}: {what}; the layer is refused "
            "(nothing saved, fused or deployed). Lower unlearn.lr or the objective's weights "
            "in params.yaml and run the batch again"
        )

    @property
    def out_of_steps(self) -> bool:
        return self.max_steps is not None and self.steps >= self.max_steps
