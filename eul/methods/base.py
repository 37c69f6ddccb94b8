"""What every unlearning method takes and returns, and the registry they live in."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from eul.data.records import Record
from eul.model.text_model import TextModel


@dataclass(frozen=True)
class ForgetTask:
    """One unlearning problem: what to forget, what to keep, and unseen rows for reference.

    `heldout` rows were never trained on; they tell an oracle-free stopping rule what
    "unseen" looks like to the model. `keep` holds, per layer position, the mean feature Gram
    of earlier requests' forget tokens (`eul.fusion.fuse.keep_grams`): a new shared-basis layer is
    held to no output there, so training it does not bring those requests back.
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


class Method(Protocol):
    name: str

    def run(
        self,
        original: TextModel,
        task: ForgetTask,
        progress: bool = True,
        max_steps: int | None = None,
    ) -> UnlearnResult:
        """Unlearn `task` from `original` (which is left untouched)."""
        ...


METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def get_method(name: str, **options: object) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)
