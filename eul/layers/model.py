"""Attach named unlearning layers to a Hugging Face model, switch them on and off, save them.

The base model is never modified: each layer position gets one forward hook that adds the
deltas of the active layers to the block's output. With no layer active the model is exactly
the original, which is what makes it its own teacher.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from eul.layers.config import LayerConfig
from eul.layers.layer import UnlearningLayer

PositionFinder = Callable[[nn.Module], list[tuple[str, nn.Module]]]
POSITION_FINDERS: dict[str, PositionFinder] = {}

WEIGHTS_FILE = "layer.safetensors"
CONFIG_FILE = "layer_config.json"
META_FILE = "layer_meta.json"


def register_positions(*model_types: str) -> Callable[[PositionFinder], PositionFinder]:
    """Register where the unlearning layers go for the given `config.model_type` values."""

    def decorate(finder: PositionFinder) -> PositionFinder:
        for model_type in model_types:
            POSITION_FINDERS[model_type] = finder
        return finder

    return decorate


@register_positions("t5", "mt5", "umt5")
def _t5_positions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """After the feed-forward sub-layer (T5LayerFF, residual included) of every block."""
    positions = [(f"encoder_{i}", block.layer[-1]) for i, block in enumerate(model.encoder.block)]
    positions += [(f"decoder_{i}", block.layer[-1]) for i, block in enumerate(model.decoder.block)]
    return positions


@register_positions("gpt2")
def _gpt2_positions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """GPT-2 blocks end with the feed-forward residual: hook the block's output."""
    return [(f"decoder_{i}", block) for i, block in enumerate(model.transformer.h)]


@register_positions("llama", "mistral", "qwen2")
def _llama_positions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Llama-style decoder layers also end with the feed-forward residual."""
    return [(f"decoder_{i}", layer) for i, layer in enumerate(model.model.layers)]


def hidden_size(model: nn.Module) -> int:
    config = model.config
    for attr in ("d_model", "hidden_size", "n_embd"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    raise ValueError(f"cannot tell the hidden size of a {config.model_type} model")


class UnlearningModel(nn.Module):
    """A frozen base model plus any number of named unlearning layers (one per request)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        model_type = base.config.model_type
        if model_type not in POSITION_FINDERS:
            known = ", ".join(sorted(POSITION_FINDERS))
            raise ValueError(
                f"no unlearning layer positions for model type {model_type!r} ({known})"
            )
        self.base = base
        self.d_model = hidden_size(base)
        self.positions = POSITION_FINDERS[model_type](base)
        self.layers = nn.ModuleDict()
        self.configs: dict[str, LayerConfig] = {}
        self.active: list[str] = []
        self.capture: Callable[[str, torch.Tensor], None] | None = None
        for p in base.parameters():
            p.requires_grad_(False)
        self._hooks = [
            module.register_forward_hook(self._hook_for(position))
            for position, module in self.positions
        ]

    @property
    def position_names(self) -> list[str]:
        return [name for name, _ in self.positions]

    def _hook_for(self, position: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            hidden = output[0] if isinstance(output, tuple) else output
            if self.capture is not None:
                self.capture(position, hidden)
            if not self.active:
                return output
            new = hidden
            for name in self.active:
                new = new + self.layers[name][position].delta(hidden)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    # -- managing layers ----------------------------------------------------------------

    def add_layer(self, name: str, config: LayerConfig | None = None) -> None:
        """Create a fresh (identity) layer at every position, named after its request, on
        the base model's device (built on the CPU, then moved: the same basis everywhere)."""
        if name in self.layers:
            raise ValueError(f"an unlearning layer named {name!r} already exists")
        config = config or LayerConfig()
        device = next(self.base.parameters()).device
        self.layers[name] = nn.ModuleDict(
            {
                pos: UnlearningLayer(self.d_model, config, index)
                for index, pos in enumerate(self.position_names)
            }
        ).to(device)
        self.configs[name] = config

    def remove_layer(self, name: str) -> None:
        del self.layers[name]
        del self.configs[name]
        self.active = [n for n in self.active if n != name]

    def set_active(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in self.layers]
        if unknown:
            raise KeyError(f"unknown unlearning layer(s): {', '.join(unknown)}")
        self.active = list(names)

    @contextmanager
    def disabled(self, *names: str) -> Iterator[None]:
        """Switch off the named layers (all of them when none is named) for a while.

        With the layer under training switched off the model is its own teacher, without a
        second copy of its weights.
        """
        saved = self.active
        self.active = [n for n in saved if names and n not in names]
        try:
            yield
        finally:
            self.active = saved

    @contextmanager
    def only(self, names: list[str]) -> Iterator[None]:
        """Switch on exactly the named layers for a while."""
        saved = self.active
        self.set_active(names)
        try:
            yield
        finally:
            self.active = saved

    def layer_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters training updates (a shared basis is fixed, so it is not among them)."""
        return [p for p in self.layers[name].parameters() if p.requires_grad]

    def parameter_share(self, name: str) -> float:
        """Trainable parameters of one layer as a share of the base model's parameters."""
        base = sum(p.numel() for p in self.base.parameters())
        return sum(p.numel() for p in self.layer_parameters(name)) / base

    # -- persistence --------------------------------------------------------------------

    def save_layer(self, name: str, folder: str | Path) -> Path:
        """Write one layer's weights (safetensors) and config; nothing about its data."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            k: v.detach().cpu().contiguous() for k, v in self.layers[name].state_dict().items()
        }
        save_file(tensors, str(folder / WEIGHTS_FILE))
        self.configs[name].save(folder / CONFIG_FILE)
        meta = {
            "name": name,
            "model_type": self.base.config.model_type,
            "d_model": self.d_model,
            "positions": self.position_names,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    def load_layer(self, folder: str | Path, name: str | None = None) -> str:
        """Load a saved layer under its saved name (or `name`); checks it fits this model."""
        folder = Path(folder)
        if not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"no unlearning layer in {folder}: {WEIGHTS_FILE} is missing")
        meta = json.loads((folder / META_FILE).read_text())
        if meta["d_model"] != self.d_model or meta["positions"] != self.position_names:
            raise ValueError(
                f"layer in {folder} was trained for another model "
                f"({meta['model_type']}, d_model {meta['d_model']})"
            )
        name = name or meta["name"]
        self.add_layer(name, LayerConfig.load(folder / CONFIG_FILE))
        self.layers[name].load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        return name
