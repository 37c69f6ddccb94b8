"""The unlearning layer itself: a residual bottleneck applied to a block's output."""

from __future__ import annotations

import torch
from torch import nn

from eul.layers.config import LayerConfig

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class UnlearningLayer(nn.Module):
    """f(h) = h + up(act(down(h))). `delta` returns only the added part.

    The up projection starts at zero, so a fresh layer leaves the model unchanged and the
    student starts equal to the teacher.
    """

    def __init__(self, d_model: int, config: LayerConfig) -> None:
        super().__init__()
        self.config = config
        self.down = nn.Linear(d_model, config.width)
        self.act = _ACTIVATIONS[config.activation]()
        self.up = nn.Linear(config.width, d_model)
        nn.init.normal_(self.down.weight, std=config.init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(hidden)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.delta(hidden)
