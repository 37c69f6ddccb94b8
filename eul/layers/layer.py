"""The unlearning layer itself: a residual bottleneck applied to a block's output."""

from __future__ import annotations

import torch
from torch import nn

from eul.layers.config import LayerConfig

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class UnlearningLayer(nn.Module):
    """f(h) = h + up(act(down(h))). `delta` returns only the added part.

    The up projection starts at zero, so a fresh layer leaves the model unchanged and the
    student starts equal to the teacher. With a shared basis the down projection is drawn
    from (basis_seed, position) with unit-variance features and frozen: every request's
    layer at a position then computes the same features.
    """

    def __init__(self, d_model: int, config: LayerConfig, position_index: int = 0) -> None:
        super().__init__()
        self.config = config
        self.down = nn.Linear(d_model, config.width)
        self.act = _ACTIVATIONS[config.activation]()
        self.up = nn.Linear(config.width, d_model)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        if config.shared_basis:
            # drawn on the CPU whatever device the layer ends up on: every device gets the
            # same basis, so layers trained on a GPU fuse with layers trained on a CPU
            generator = torch.Generator().manual_seed(config.basis_seed * 10_007 + position_index)
            with torch.no_grad():
                basis = torch.randn(config.width, d_model, generator=generator, device="cpu")
                self.down.weight.copy_(basis / d_model**0.5)
            self.down.requires_grad_(False)
        else:
            nn.init.normal_(self.down.weight, std=config.init_std)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the up projection reads: act(down(h))."""
        return self.act(self.down(hidden))

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.features(hidden))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.delta(hidden)
