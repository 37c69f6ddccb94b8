"""Configuration of an unlearning layer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

ACTIVATIONS = ("relu", "gelu", "tanh")
BASES = ("shared", "trained")


@dataclass(frozen=True)
class LayerConfig:
    """A bottleneck adapter: down projection to `width`, activation, up projection.

    Width 64 with a shared basis (32 with a trained one) puts a t5-base-sized model
    (d_model 768, 12+12 blocks) near the paper's 0.5% of trainable parameters.

    `basis="shared"` fixes the down projection from `basis_seed` (the same for every
    request of a model) and trains only the up projection. Every such layer is then linear
    in the same features, so any number of them fuse exactly into one layer of the same
    width (`eul.fusion.fuse`). `"trained"` trains both projections, as the paper has it.
    """

    width: int = 64
    activation: str = "relu"
    init_std: float = 0.02
    basis: str = "shared"
    basis_seed: int = 0

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"layer width must be at least 1, got {self.width}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}, got {self.basis!r}")

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> LayerConfig:
        return cls(**json.loads(path.read_text()))

    @property
    def shared_basis(self) -> bool:
        return self.basis == "shared"
