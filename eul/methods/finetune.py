"""Fine-tune baseline: keep training the whole model on retained data only.

Forgetting happens only through interference; cheap, but with no guarantee.
"""

from __future__ import annotations

from dataclasses import replace

from eul.methods.base import ForgetTask, Unlearned, UnlearningMethod, register_method
from eul.model.text_model import TextModel
from eul.model.training import TrainConfig, train_full


@register_method("finetune")
class Finetune(UnlearningMethod):
    def __init__(self, train: TrainConfig | None = None) -> None:
        self.train = train or TrainConfig(epochs=2, lr=2e-4)

    def unlearn(
        self, model: TextModel, task: ForgetTask, progress: bool, max_steps: int | None
    ) -> Unlearned:
        for p in model.model.parameters():
            p.requires_grad_(True)
        train_full(model, task.retained, replace(self.train), "fine-tune", progress, max_steps)
        return Unlearned(model, 1.0)
