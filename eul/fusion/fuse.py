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

The statistics a fit needs are collected by `eul.fusion.statistics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from eul.fusion.statistics import FusionStats
from eul.layers import LayerConfig, UnlearningModel

STATE_FILE = "fusion_state.safetensors"
STATE_META_FILE = "fusion_state.json"
FUSED_FILE = "fused.safetensors"
FUSED_META_FILE = "fused_meta.json"


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
