"""Per-request statistics for fusing unlearning layers: sums, never hidden states or text.

A request's layer is summed over its own forget tokens (`capture_statistics`): the Gram
X^T X of X = [hidden states or shared-basis features, 1], the cross term X^T Y with Y the
layer's output change, the token count and sum Y^2. Only these sums are kept per request, so
a new request adds its sums to the running total (`eul.fusion.fuse`) and nothing about
earlier requests is recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eul.data.records import Record
from eul.layers import LayerConfig, UnlearningModel
from eul.model.text_model import IGNORE, TextModel

STATS_FILE = "fusion_stats.safetensors"
STATS_META_FILE = "fusion_stats.json"
FEATURE_STATS = "feature_stats"

Target = Callable[[str, torch.Tensor], torch.Tensor]


@dataclass
class FusionStats:
    """Sufficient statistics of a linear fit, per layer position, in float64 on the CPU.

    gram[p] = X^T X ((k+1)x(k+1)), cross[p] = X^T Y ((k+1)xd), count[p] = tokens seen,
    target_sq[p] = sum of Y^2 (only to report how well a fused map fits). X holds the hidden
    states (k = d) or a shared basis's features (k = width), with a column of ones.
    """

    positions: list[str]
    gram: dict[str, torch.Tensor]
    cross: dict[str, torch.Tensor]
    count: dict[str, int]
    target_sq: dict[str, float]

    @property
    def d_model(self) -> int:
        return int(self.cross[self.positions[0]].shape[1])

    @property
    def d_in(self) -> int:
        return int(self.gram[self.positions[0]].shape[0]) - 1

    @classmethod
    def zeros(cls, positions: Sequence[str], d_model: int, d_in: int | None = None) -> FusionStats:
        d1 = (d_model if d_in is None else d_in) + 1
        return cls(
            positions=list(positions),
            gram={p: torch.zeros(d1, d1, dtype=torch.float64) for p in positions},
            cross={p: torch.zeros(d1, d_model, dtype=torch.float64) for p in positions},
            count={p: 0 for p in positions},
            target_sq={p: 0.0 for p in positions},
        )

    def __add__(self, other: FusionStats) -> FusionStats:
        """Statistics of two requests together: the sums simply add."""
        if not isinstance(other, FusionStats):
            return NotImplemented
        if other.positions != self.positions:
            raise ValueError(
                f"cannot add statistics of different layer positions "
                f"({self.positions} vs {other.positions})"
            )
        if (other.d_in, other.d_model) != (self.d_in, self.d_model):
            raise ValueError(
                f"cannot add statistics of different sizes "
                f"({self.d_in}->{self.d_model} vs {other.d_in}->{other.d_model})"
            )
        return FusionStats(
            positions=list(self.positions),
            gram={p: self.gram[p] + other.gram[p] for p in self.positions},
            cross={p: self.cross[p] + other.cross[p] for p in self.positions},
            count={p: self.count[p] + other.count[p] for p in self.positions},
            target_sq={p: self.target_sq[p] + other.target_sq[p] for p in self.positions},
        )

    def __sub__(self, other: FusionStats) -> FusionStats:
        """The statistics without `other`'s (a request taken back out of a total): the sums
        simply subtract. Refused where `other` holds more tokens than the total."""
        if not isinstance(other, FusionStats):
            return NotImplemented
        negated = FusionStats(
            positions=list(other.positions),
            gram={p: -g for p, g in other.gram.items()},
            cross={p: -c for p, c in other.cross.items()},
            count={p: -n for p, n in other.count.items()},
            target_sq={p: -t for p, t in other.target_sq.items()},
        )
        total = self + negated
        if any(n < 0 for n in total.count.values()):
            raise ValueError("cannot take out statistics of more tokens than the total holds")
        return total

    def __radd__(self, other: object) -> FusionStats:
        """Lets `sum(list_of_stats)` work (it starts from 0)."""
        if other == 0:
            return self
        return NotImplemented

    def save(self, folder: str | Path, stem: str = "fusion_stats") -> Path:
        """Write the sums (safetensors) and a small json; nothing per token is stored."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for p in self.positions:
            tensors[f"gram.{p}"] = self.gram[p].contiguous()
            tensors[f"cross.{p}"] = self.cross[p].contiguous()
            tensors[f"target_sq.{p}"] = torch.tensor([self.target_sq[p]], dtype=torch.float64)
        save_file(tensors, str(folder / f"{stem}.safetensors"))
        meta = {
            "positions": self.positions,
            "count": self.count,
            "d_model": self.d_model,
            "d_in": self.d_in,
        }
        (folder / f"{stem}.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, stem: str = "fusion_stats") -> FusionStats:
        folder = Path(folder)
        if not (folder / f"{stem}.safetensors").is_file():
            raise FileNotFoundError(
                f"no fusion statistics in {folder}: {stem}.safetensors is missing"
            )
        meta = json.loads((folder / f"{stem}.json").read_text())
        tensors = load_file(str(folder / f"{stem}.safetensors"))
        positions = list(meta["positions"])
        stats = cls(
            positions=positions,
            gram={p: tensors[f"gram.{p}"] for p in positions},
            cross={p: tensors[f"cross.{p}"] for p in positions},
            count={p: int(meta["count"][p]) for p in positions},
            target_sq={p: float(tensors[f"target_sq.{p}"][0]) for p in positions},
        )
        if stats.d_model != meta["d_model"]:
            raise ValueError(f"fusion statistics in {folder} do not match their d_model")
        return stats


# -- collecting statistics ------------------------------------------------------------------


def _token_masks(tm: TextModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Which positions of each stack's hidden states are real tokens of this batch."""
    encoder = batch["attention_mask"].bool()
    if tm.is_encoder_decoder:
        return {"encoder": encoder, "decoder": batch["labels"] != IGNORE}
    return {"encoder": encoder, "decoder": encoder}


def _float64(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in float64 where it is; MPS has no float64, so its sums are taken on the CPU."""
    if tensor.device.type == "mps":
        tensor = tensor.cpu()
    return tensor.double()


@torch.no_grad()
def _collect(
    tm: TextModel,
    records: Sequence[Record],
    batch_size: int,
    target: Target | None,
    features: Target | None = None,
    d_in: int | None = None,
) -> FusionStats:
    """Run the model over the records and sum X^T X (and X^T Y with Y = target) per position.

    X is the hidden state, or `features(position, hidden)` (of size d_in) when given. Each
    batch's sums are taken in float64 where the model runs and added to the CPU totals.
    """
    layers = tm.unlearning_layers()
    stats = FusionStats.zeros(layers.position_names, layers.d_model, d_in)
    masks: dict[str, torch.Tensor] = {}

    def capture(position: str, hidden: torch.Tensor) -> None:
        stack = "encoder" if position.startswith("encoder_") else "decoder"
        keep = masks[stack].to(hidden.device)
        h = hidden[keep]
        f = _float64(h if features is None else features(position, h))
        x = torch.cat([f, f.new_ones(f.shape[0], 1)], dim=1)
        stats.gram[position] += (x.T @ x).cpu()
        stats.count[position] += int(h.shape[0])
        if target is not None:
            y = _float64(target(position, h))
            stats.cross[position] += (x.T @ y).cpu()
            stats.target_sq[position] += float((y * y).sum())

    was_training = tm.model.training
    tm.model.eval()
    layers.capture = capture
    try:
        for batch in tm.record_batches(records, batch_size):  # on the model's device
            masks.clear()
            masks.update(_token_masks(tm, batch))
            tm.logits(batch)
    finally:
        layers.capture = None
        tm.model.train(was_training)
    return stats


def capture_statistics(
    tm: TextModel,
    layer_name: str,
    records: Sequence[Record],
    batch_size: int = 64,
    space: str = "hidden",
) -> FusionStats:
    """Statistics of one request: its layer's output change on its own forget tokens.

    The layers that were active while it trained stay active, so the hidden states are those
    the layer saw in training. `space="features"` sums over the layer's basis features
    act(D h) instead of the hidden states (the shared-basis form).
    """
    layers = tm.unlearning_layers()
    hosted = layers.layers[layer_name]

    def target(position: str, hidden: torch.Tensor) -> torch.Tensor:
        return hosted[position].delta(hidden)

    features, d_in = _feature_map(layers, layer_name, space)
    active = layers.active if layer_name in layers.active else [*layers.active, layer_name]
    with layers.only(active):
        return _collect(tm, records, batch_size, target, features, d_in)


def save_request_statistics(
    tm: TextModel, layer_name: str, forget: Sequence[Record], folder: str | Path
) -> None:
    """Write, next to a request's layer weights, the sums that fusing it needs.

    Hidden-space sums always (the linear fallback); feature-space sums too when the layer has
    a shared basis. They are computed with the layer as it was trained (earlier layers still
    active) and hold no text or token ids.
    """
    capture_statistics(tm, layer_name, forget).save(folder)
    if tm.unlearning_layers().configs[layer_name].shared_basis:
        features = capture_statistics(tm, layer_name, forget, space="features")
        features.save(folder, stem=FEATURE_STATS)


def anchor_statistics(
    tm: TextModel,
    records: Sequence[Record],
    batch_size: int = 64,
    basis_of: str | None = None,
) -> FusionStats:
    """Grams of retained tokens with target zero: added to a fit, they keep the fused map
    close to the identity (no change) where the model should keep working.

    `basis_of` names a shared-basis layer whose features to sum (else hidden states).
    """
    layers = tm.unlearning_layers()
    features, d_in = _feature_map(layers, basis_of, "features" if basis_of else "hidden")
    with layers.disabled():
        return _collect(tm, records, batch_size, None, features, d_in)


def served_feature_statistics(
    tm: TextModel, records: Sequence[Record], config: LayerConfig, batch_size: int = 64
) -> FusionStats:
    """Feature Grams of `records` in the shared basis of `config`, with the layers active
    now (the model as it serves): what a new layer of that basis will read on those tokens.

    Taken before a layer is trained (side-by-side layers hold off each other's forget tokens
    and the retained ones with them, `keep_grams`); a throwaway layer provides the basis,
    which `basis_seed` fixes, and is removed again.
    """
    if not config.shared_basis:
        raise ValueError("feature statistics need a shared basis (basis='shared')")
    layers = tm.unlearning_layers()
    probe = "_basis_probe"
    layers.add_layer(probe, config)
    try:
        features, d_in = _feature_map(layers, probe, "features")
        return _collect(tm, records, batch_size, None, features, d_in)
    finally:
        layers.remove_layer(probe)


def _feature_map(
    layers: UnlearningModel, layer_name: str | None, space: str
) -> tuple[Target | None, int | None]:
    if space == "hidden":
        return None, None
    if space != "features":
        raise ValueError(f"space must be 'hidden' or 'features', got {space!r}")
    hosted = layers.layers[layer_name]
    if not layers.configs[layer_name].shared_basis:
        raise ValueError(f"layer {layer_name!r} has a trained basis: use space='hidden'")

    def features(position: str, hidden: torch.Tensor) -> torch.Tensor:
        return hosted[position].features(hidden)

    return features, layers.configs[layer_name].width


# -- keeping earlier requests ---------------------------------------------------------------


def keep_grams(stats: FusionStats) -> dict[str, torch.Tensor]:
    """Per position, the mean feature Gram of the tokens in `stats` (`ForgetTask.keep`).

    A new shared-basis layer trained with these is held to no output on the earlier
    requests' forget tokens, so adding it leaves those requests forgotten.
    """
    if any(stats.count[p] == 0 for p in stats.positions):
        raise ValueError("no tokens in these statistics: nothing to keep")
    return {p: (stats.gram[p] / stats.count[p]).float() for p in stats.positions}
