"""Unlearning layers: config, the layer, and the model wrapper that hosts many of them."""

from eul.layers.config import LayerConfig
from eul.layers.layer import UnlearningLayer
from eul.layers.model import POSITION_FINDERS, UnlearningModel, register_positions

__all__ = [
    "POSITION_FINDERS",
    "LayerConfig",
    "UnlearningLayer",
    "UnlearningModel",
    "register_positions",
]
