"""The oracle: a model retrained from scratch on the retained data alone.

The exact answer to "forget these rows", and the yardstick every other method is held to.
"""

from __future__ import annotations

from eul.methods.base import ForgetTask, Unlearned, UnlearningMethod, register_method
from eul.model.text_model import TextModel
from eul.model.training import TrainConfig, seed_everything, train_full


@register_method("retrain")
class Retrain(UnlearningMethod):
    # a fresh model is built from the original's config: the original only lends its config,
    # tokenizer and device, so there is nothing to copy
    copies_model = False

    def __init__(self, train: TrainConfig | None = None) -> None:
        self.train = train or TrainConfig()

    def unlearn(
        self, model: TextModel, task: ForgetTask, progress: bool, max_steps: int | None
    ) -> Unlearned:
        seed_everything(self.train.seed)
        fresh = type(model.model)(model.model.config)
        tm = TextModel(fresh, model.tokenizer, model.max_input_len, model.max_target_len)
        tm.to(model.device)  # initialised on the CPU (the same weights anywhere), trained there
        train_full(tm, task.retained, self.train, "retrain (oracle)", progress, max_steps)
        return Unlearned(tm, 1.0)
