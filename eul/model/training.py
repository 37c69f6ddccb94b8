"""Full-model training: every weight on the task loss (base model, oracle retrain, fine-tune)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from eul.data.records import Record

if TYPE_CHECKING:
    from eul.model.text_model import TextModel


@dataclass(frozen=True)
class TrainConfig:
    """Full-model training (base model, oracle retrain, fine-tune baseline)."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    warmup_share: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators: a run with the same seed draws the same numbers."""
    random.seed(seed)
    torch.manual_seed(seed)


def linear_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_share: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then linear decay to zero, as in the paper's training recipe."""
    warmup = max(1, int(total_steps * warmup_share))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_full(
    tm: TextModel,
    records: Sequence[Record],
    config: TrainConfig,
    desc: str = "train",
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Train every weight of the model on the task loss (base model, oracle, fine-tune),
    on the device the model is on (move it first with `TextModel.to`).

    `max_steps` cuts the run short (used to measure memory on a few representative steps).
    """
    if not records:
        raise ValueError("cannot train on an empty data set")
    seed_everything(config.seed)
    model = tm.model
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(records) / config.batch_size)
    scheduler = linear_schedule(optimizer, steps_per_epoch * config.epochs, config.warmup_share)
    bar = tqdm(total=steps_per_epoch * config.epochs, desc=desc, disable=not progress, leave=False)
    loss_value = float("nan")
    done = 0
    for epoch in range(config.epochs):
        for batch in tm.record_batches(
            records, config.batch_size, shuffle=True, seed=config.seed + epoch
        ):
            if max_steps is not None and done >= max_steps:
                break
            loss = tm.task_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            loss_value = loss.item()
            done += 1
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_value:.3f}")
            bar.update()
    bar.close()
    model.eval()
    return {"final_loss": loss_value, "steps": done}
