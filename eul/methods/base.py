"""What every unlearning method takes and returns, and the registry they live in."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from eul.data.records import Record
from eul.model.text_model import TextModel


@dataclass(frozen=True)
class ForgetTask:
    """One unlearning problem: what to forget, what to keep, and unseen rows for reference.

    `heldout` rows were never trained on; they tell an oracle-free stopping rule what
    "unseen" looks like to the model. `keep` holds, per layer position, the mean feature Gram
    of earlier requests' forget tokens (`eul.fusion.statistics.keep_grams`): a new shared-basis
    layer is held to no output there, so training it does not bring those requests back.
    """

    forget: Sequence[Record]
    retained: Sequence[Record]
    heldout: Sequence[Record] = ()
    name: str = "request"
    keep: Mapping[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if not self.forget:
            raise ValueError("the forget set is empty: name at least one record to forget")


@dataclass
class UnlearnResult:
    """The unlearned model and what it cost."""

    model: TextModel
    update_s: float
    trainable_share: float
    history: list[dict[str, float]] = field(default_factory=list)
    layer_name: str | None = None


@dataclass(frozen=True)
class Unlearned:
    """What a method's own steps give back; `UnlearningMethod.run` adds the time they took."""

    model: TextModel
    trainable_share: float
    history: list[dict[str, float]] = field(default_factory=list)
    layer_name: str | None = None


class UnlearningMethod:
    """What every method shares: it works on a copy of the caller's model, and is timed.

    `run` copies the model passed in, hands the copy to `unlearn` and times both, so that the
    caller's weights are left as they were whatever the method trains. A method that never
    changes the weights it is given sets `copies_model = False`, and so saves a copy: the
    oracle builds a fresh model from the original's config, and EUL trains only a new layer
    that it adds to the model passed in (its base frozen), where the caller then finds it.
    """

    name: ClassVar[str]
    copies_model: ClassVar[bool] = True

    def run(
        self,
        original: TextModel,
        task: ForgetTask,
        progress: bool = True,
        max_steps: int | None = None,
    ) -> UnlearnResult:
        """Unlearn `task` from `original` (whose weights are left untouched)."""
        return self.timed(original, lambda model: self.unlearn(model, task, progress, max_steps))

    def timed(
        self, original: TextModel, unlearn: Callable[[TextModel], Unlearned]
    ) -> UnlearnResult:
        """Run `unlearn` on the model this method works on (a copy of `original`, unless
        `copies_model` is False), timing the copy and the run together."""
        started = time.perf_counter()
        model = original.copy() if self.copies_model else original
        outcome = unlearn(model)
        return UnlearnResult(
            model=outcome.model,
            update_s=time.perf_counter() - started,
            trainable_share=outcome.trainable_share,
            history=outcome.history,
            layer_name=outcome.layer_name,
        )

    def unlearn(
        self, model: TextModel, task: ForgetTask, progress: bool, max_steps: int | None
    ) -> Unlearned:
        """The method's own steps, on the model it works on (`max_steps` cuts them short)."""
        raise NotImplementedError


METHODS: dict[str, Callable[..., UnlearningMethod]] = {}


def register_method(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def get_method(name: str, **options: object) -> UnlearningMethod:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)
