"""Configuration of an unlearning layer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

ACTIVATIONS = ("relu", "gelu", "tanh")


@dataclass(frozen=True)
class LayerConfig:
    """A bottleneck adapter: down projection to `width`, activation, up projection.

    Width 32 puts a t5-base-sized model (d_model 768, 12+12 blocks) near the paper's
    0.5% of trainable parameters.
    """

    width: int = 32
    activation: str = "relu"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"layer width must be at least 1, got {self.width}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> LayerConfig:
        return cls(**json.loads(path.read_text()))
