"""Reverse-gradient baseline: gradient ascent on forget rows, descent on retained rows.

Every weight moves; the ascent is unbounded, so the number of steps is what stops it.
"""

from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from eul.methods.base import ForgetTask, Unlearned, UnlearningMethod, register_method
from eul.model.text_model import TextModel
from eul.model.training import seed_everything


@register_method("reverse_gradient")
class ReverseGradient(UnlearningMethod):
    def __init__(
        self, steps: int = 30, lr: float = 1e-4, batch_size: int = 32, seed: int = 0
    ) -> None:
        self.steps, self.lr, self.batch_size, self.seed = steps, lr, batch_size, seed

    def unlearn(
        self, tm: TextModel, task: ForgetTask, progress: bool, max_steps: int | None
    ) -> Unlearned:
        seed_everything(self.seed)
        rng = random.Random(self.seed)
        params = list(tm.model.parameters())
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        forget, retained = list(task.forget), list(task.retained)
        steps = self.steps if max_steps is None else min(self.steps, max_steps)
        tm.model.train()
        for _ in tqdm(range(steps), desc="reverse gradient", disable=not progress, leave=False):
            f = rng.sample(forget, min(self.batch_size, len(forget)))
            r = rng.sample(retained, min(self.batch_size, len(retained)))
            ascent = tm.task_loss(tm.batch([x.text for x in f], [x.target for x in f]))
            descent = tm.task_loss(tm.batch([x.text for x in r], [x.target for x in r]))
            loss = descent - ascent
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        tm.model.eval()
        return Unlearned(tm, 1.0)
