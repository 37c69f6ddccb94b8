"""Fine-tune baseline: keep training the whole model on retained data only.

Forgetting happens only through interference; cheap, but with no guarantee.
"""

from __future__ import annotations

import time
from dataclasses import replace

from eul.methods.base import ForgetTask, UnlearnResult, register_method
from eul.model.text_model import TextModel
from eul.model.training import TrainConfig, train_full


@register_method("finetune")
class Finetune:
    def __init__(self, train: TrainConfig | None = None) -> None:
        self.train = train or TrainConfig(epochs=2, lr=2e-4)

    def run(
        self,
        original: TextModel,
        task: ForgetTask,
        progress: bool = True,
        max_steps: int | None = None,
    ) -> UnlearnResult:
        started = time.perf_counter()
        for p in original.model.parameters():
            p.requires_grad_(True)
        train_full(original, task.retained, replace(self.train), "fine-tune", progress, max_steps)
        return UnlearnResult(original, time.perf_counter() - started, 1.0)
