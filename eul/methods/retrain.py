"""The oracle: a model retrained from scratch on the retained data alone.

The exact answer to "forget these rows", and the yardstick every other method is held to.
"""

from __future__ import annotations

import time

from eul.methods.base import ForgetTask, UnlearnResult, register_method
from eul.model.text_model import TextModel
from eul.model.training import TrainConfig, seed_everything, train_full


@register_method("retrain")
class Retrain:
    def __init__(self, train: TrainConfig | None = None) -> None:
        self.train = train or TrainConfig()

    def run(
        self,
        original: TextModel,
        task: ForgetTask,
        progress: bool = True,
        max_steps: int | None = None,
    ) -> UnlearnResult:
        started = time.perf_counter()
        seed_everything(self.train.seed)
        fresh = type(original.model)(original.model.config)
        tm = TextModel(fresh, original.tokenizer, original.max_input_len, original.max_target_len)
        tm.to(original.device)  # initialised on the CPU (the same weights anywhere), trained there
        train_full(tm, task.retained, self.train, "retrain (oracle)", progress, max_steps)
        return UnlearnResult(tm, time.perf_counter() - started, 1.0)
