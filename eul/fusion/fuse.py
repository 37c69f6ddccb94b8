"""Closed-form fusion of unlearning layers from per-request statistics.

Two forms, by the layers' basis (`LayerConfig.basis`):

- Shared basis (the default layer): every request's layer at a position computes the same
  features phi(h) = act(D h) and differs only in its up projection A_i. The stack of layers
  is then exactly one layer of the same width with A = sum_i A_i, and the paper's closed form
  A = (sum_i Phi_i^T Phi_i)^-1 sum_i Phi_i^T Phi_i A_i is exact in feature space. `FusionState`
  keeps these sums; `fuse_shared` solves them, optionally with a retained anchor.
- Trained basis (the paper's layer): the non-linear bottlenecks differ per request and no
  layer of fixed size holds their sum. The fallback below fits one linear map per position.

One linear map per layer position is fit, by ridge regression, to every request's layer
outputs on that request's own forget tokens: M = (sum_i X_i^T X_i)^-1 sum_i X_i^T Y_i, with
X_i = [hidden states, 1] and Y_i the layer's output change. For a linear layer Y_i = X_i W_i and
this is the paper's W_m = (sum_i X_i^T X_i)^-1 sum_i X_i^T X_i W_i. Only the sums X^T X, X^T Y,
the token count and sum Y^2 are kept per request, never hidden states, token ids or text, so a
new request adds its sums to the running total and nothing about earlier requests is recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from eul.data.records import Record
from eul.layers import LayerConfig, UnlearningModel
from eul.model.text_model import IGNORE, TextModel

STATS_FILE = "fusion_stats.safetensors"
STATS_META_FILE = "fusion_stats.json"
FEATURE_STATS = "feature_stats"
STATE_FILE = "fusion_state.safetensors"
STATE_META_FILE = "fusion_state.json"
FUSED_FILE = "fused.safetensors"
FUSED_META_FILE = "fused_meta.json"

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


# -- the closed form ------------------------------------------------------------------------


def fuse(
    stats: FusionStats,
    ridge: float = 1e-3,
    anchor: FusionStats | None = None,
    anchor_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Per position M = (G + w G_anchor + ridge * trace(G)/(d+1) I)^-1 (C + w C_anchor).

    The ridge is relative to the mean diagonal of G, so one value suits any hidden scale.
    Returns float32 (d+1)xd matrices: rows 0..d-1 multiply the hidden state, row d is the bias.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be non-negative, got {ridge}")
    if anchor is not None and anchor.positions != stats.positions:
        raise ValueError("the anchor statistics are for other layer positions")
    matrices: dict[str, torch.Tensor] = {}
    d1 = stats.d_model + 1
    for p in stats.positions:
        gram, cross = stats.gram[p], stats.cross[p]
        if stats.count[p] == 0:
            matrices[p] = torch.zeros(d1, stats.d_model)
            continue
        lhs = gram + ridge * torch.trace(gram) / d1 * torch.eye(d1, dtype=torch.float64)
        rhs = cross
        if anchor is not None:
            lhs = lhs + anchor_weight * anchor.gram[p]
            rhs = rhs + anchor_weight * anchor.cross[p]
        matrices[p] = torch.linalg.solve(lhs, rhs).float()
    return matrices


def fit_error(stats: FusionStats, matrices: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative residual ||XM - Y||^2 / ||Y||^2 per position, from the sums alone.

    ||XM - Y||^2 = trace(M^T G M) - 2 trace(M^T C) + sum Y^2, so a fusion's quality can be
    reported after the forget data is gone.
    """
    errors: dict[str, float] = {}
    for p in stats.positions:
        m = matrices[p].double()
        residual = (
            float(((stats.gram[p] @ m) * m).sum())
            - 2.0 * float((m * stats.cross[p]).sum())
            + stats.target_sq[p]
        )
        residual = max(residual, 0.0)
        if stats.target_sq[p] > 0:
            errors[p] = residual / stats.target_sq[p]
        else:
            errors[p] = 0.0 if residual == 0.0 else float("inf")
    return errors


# -- hosting a fused map --------------------------------------------------------------------


class LinearFusedLayer(nn.Module):
    """delta(h) = h @ M[:-1] + M[-1]: a fused map that UnlearningModel hosts like any layer."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] + 1:
            raise ValueError(f"a fused map must be (d+1)xd, got {tuple(matrix.shape)}")
        self.register_buffer("matrix", matrix.detach().float().clone())

    @property
    def d_model(self) -> int:
        return int(self.matrix.shape[1])

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        m = self.matrix.to(dtype=hidden.dtype)
        return hidden @ m[:-1] + m[-1]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.delta(hidden)


@dataclass(frozen=True)
class FusedConfig:
    """What UnlearningModel records for a fused layer (it has no bottleneck config)."""

    d_model: int
    positions: tuple[str, ...]


def add_fused_layer(layers: UnlearningModel, name: str, matrices: dict[str, torch.Tensor]) -> None:
    """Host a fused map under `name`, so that `layers.set_active([name])` switches it on.

    It is saved with `save_fused`/`load_fused`, not `save_layer`/`load_layer`.
    """
    if name in layers.layers:
        raise ValueError(f"an unlearning layer named {name!r} already exists")
    if sorted(matrices) != sorted(layers.position_names):
        raise ValueError(
            f"fused maps are for positions {sorted(matrices)}, "
            f"this model has {sorted(layers.position_names)}"
        )
    expected = (layers.d_model + 1, layers.d_model)
    for position, matrix in matrices.items():
        if tuple(matrix.shape) != expected:
            raise ValueError(
                f"fused map at {position} has shape {tuple(matrix.shape)}, "
                f"this model needs {expected}"
            )
    device = next(layers.base.parameters()).device
    layers.layers[name] = nn.ModuleDict(
        {p: LinearFusedLayer(matrices[p]) for p in layers.position_names}
    ).to(device)
    layers.configs[name] = FusedConfig(layers.d_model, tuple(layers.position_names))


def save_fused(matrices: dict[str, torch.Tensor], folder: str | Path) -> Path:
    """Write fused maps (safetensors) and their positions; the maps hold no per-token data."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {p: m.detach().float().cpu().contiguous() for p, m in matrices.items()}
    save_file(tensors, str(folder / FUSED_FILE))
    d_model = int(next(iter(matrices.values())).shape[1])
    meta = {"positions": list(matrices), "d_model": d_model}
    (folder / FUSED_META_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def load_fused(folder: str | Path) -> dict[str, torch.Tensor]:
    folder = Path(folder)
    if not (folder / FUSED_FILE).is_file():
        raise FileNotFoundError(f"no fused layer in {folder}: {FUSED_FILE} is missing")
    meta = json.loads((folder / FUSED_META_FILE).read_text())
    tensors = load_file(str(folder / FUSED_FILE))
    return {p: tensors[p] for p in meta["positions"]}


# -- shared-basis layers: exact, incremental fusion -----------------------------------------

FUSION_MODES = ("sum", "fit")


def keep_grams(stats: FusionStats) -> dict[str, torch.Tensor]:
    """Per position, the mean feature Gram of the tokens in `stats` (`ForgetTask.keep`).

    A new shared-basis layer trained with these is held to no output on the earlier
    requests' forget tokens, so adding it leaves those requests forgotten.
    """
    if any(stats.count[p] == 0 for p in stats.positions):
        raise ValueError("no tokens in these statistics: nothing to keep")
    return {p: (stats.gram[p] / stats.count[p]).float() for p in stats.positions}


def up_matrix(layer: nn.Module) -> torch.Tensor:
    """A layer's up projection as one (width+1)xd float64 matrix: [up.weight^T; up.bias]."""
    return torch.cat([layer.up.weight.detach().T, layer.up.bias.detach()[None]]).cpu().double()


@dataclass
class FusionState:
    """Running sums from which shared-basis layers fuse, one request at a time.

    up_sum[p] = sum_i A_i (the stack, exactly), stats = feature-space sums of every request's
    forget tokens (Gram sum_i Phi_i^T Phi_i and cross sum_i Phi_i^T Phi_i A_i). Adding request
    N+1 adds its terms; requests 1..N are never revisited.
    """

    config: LayerConfig
    up_sum: dict[str, torch.Tensor]
    stats: FusionStats
    requests: list[str]

    @classmethod
    def empty(cls, layers: UnlearningModel, config: LayerConfig) -> FusionState:
        if not config.shared_basis:
            raise ValueError("exact fusion needs layers with a shared basis (basis='shared')")
        positions = layers.position_names
        width = config.width
        return cls(
            config=config,
            up_sum={
                p: torch.zeros(width + 1, layers.d_model, dtype=torch.float64) for p in positions
            },
            stats=FusionStats.zeros(positions, layers.d_model, width),
            requests=[],
        )

    def add(self, layers: UnlearningModel, name: str, stats: FusionStats) -> None:
        """Add request `name`'s layer (hosted in `layers`) and its feature statistics."""
        if name in self.requests:
            raise ValueError(f"request {name!r} is already fused")
        if layers.configs[name] != self.config:
            raise ValueError(
                f"layer {name!r} has another basis ({layers.configs[name]}) than the fused "
                f"layers ({self.config}); only layers of one shared basis fuse exactly"
            )
        up = {p: up_matrix(layers.layers[name][p]) for p in self.stats.positions}
        self.add_up(name, up, stats)

    def add_up(self, name: str, up: dict[str, torch.Tensor], stats: FusionStats) -> None:
        """Add one request from its up projections ((width+1)xd) and feature statistics."""
        if name in self.requests:
            raise ValueError(f"request {name!r} is already fused")
        if stats.d_in != self.config.width:
            raise ValueError("statistics are not in this basis's feature space")
        self.stats = self.stats + stats
        for p in self.stats.positions:
            self.up_sum[p] = self.up_sum[p] + up[p].double()
        self.requests.append(name)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.stats.save(folder, stem="fusion_state_stats")
        tensors = {f"up_sum.{p}": t.contiguous() for p, t in self.up_sum.items()}
        save_file(tensors, str(folder / STATE_FILE))
        meta = {"config": self.config.__dict__, "requests": self.requests}
        (folder / STATE_META_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FusionState:
        folder = Path(folder)
        if not (folder / STATE_FILE).is_file():
            raise FileNotFoundError(f"no fusion state in {folder}: {STATE_FILE} is missing")
        meta = json.loads((folder / STATE_META_FILE).read_text())
        stats = FusionStats.load(folder, stem="fusion_state_stats")
        tensors = load_file(str(folder / STATE_FILE))
        return cls(
            config=LayerConfig(**meta["config"]),
            up_sum={p: tensors[f"up_sum.{p}"] for p in stats.positions},
            stats=stats,
            requests=list(meta["requests"]),
        )


def fuse_shared(
    state: FusionState,
    mode: str = "sum",
    ridge: float = 1e-6,
    anchor: FusionStats | None = None,
    anchor_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The fused up projection per position, (width+1)xd float32.

    mode "sum": reproduce the stack, A = sum_i A_i, on every request's forget tokens.
    mode "fit": the paper's closed form, each layer reproduced on its own forget tokens,
    A = (sum_i G_i)^-1 sum_i G_i A_i.
    Without an anchor, "sum" is exact and needs no solve. With one, the fit adds
    ||Phi_R A||^2 over retained tokens (target: no change), all of them together weighing
    anchor_weight times all forget tokens (the anchor set is usually far larger), solved in
    float64 with a ridge relative to the mean diagonal of the Gram.
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
    if ridge < 0 or anchor_weight < 0:
        raise ValueError("ridge and anchor_weight must be non-negative")
    if anchor is not None and anchor.d_in != state.stats.d_in:
        raise ValueError("the anchor statistics are not in this basis's feature space")
    matrices: dict[str, torch.Tensor] = {}
    stats = state.stats
    for p in stats.positions:
        gram = stats.gram[p]
        if mode == "sum" and anchor is None:
            matrices[p] = state.up_sum[p].float()
            continue
        rhs = gram @ state.up_sum[p] if mode == "sum" else stats.cross[p]
        lhs = gram.clone()
        if anchor is not None and anchor.count[p] > 0:
            # the anchor tokens together weigh anchor_weight times the forget tokens together
            weight = anchor_weight * stats.count[p] / anchor.count[p]
            lhs = lhs + weight * anchor.gram[p]
            rhs = rhs + weight * anchor.cross[p]
        d1 = lhs.shape[0]
        scale = torch.trace(lhs) / d1 if torch.trace(lhs) > 0 else torch.tensor(1.0)
        lhs = lhs + ridge * scale * torch.eye(d1, dtype=torch.float64)
        matrices[p] = torch.linalg.solve(lhs, rhs).float()
    return matrices


def add_shared_fused_layer(
    layers: UnlearningModel, name: str, config: LayerConfig, matrices: dict[str, torch.Tensor]
) -> None:
    """Host a fused shared-basis layer: the basis of `config`, the fused up projections.

    It is an ordinary unlearning layer, so `save_layer`/`load_layer` handle it.
    """
    layers.add_layer(name, config)
    with torch.no_grad():
        for p, layer in layers.layers[name].items():
            matrix = matrices[p].to(layer.up.weight)
            if tuple(matrix.shape) != (config.width + 1, layers.d_model):
                raise ValueError(f"fused up projection at {p} has shape {tuple(matrix.shape)}")
            layer.up.weight.copy_(matrix[:-1].T)
            layer.up.bias.copy_(matrix[-1])
