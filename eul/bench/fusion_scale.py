"""How fusion scales with the number of requests: time, peak memory, inference cost.

Per-request statistics are synthetic here (random hidden states of the model's width, random
features of the shared basis's width, random targets and up projections), since what is
measured is the cost of accumulating and solving, not the quality of the fit. Two forms are
timed: the shared-basis fusion the pipeline uses (running sums, then a solve with a retained
anchor) and the linear fallback for trained-basis layers. Inference is timed on a real model
with the fused layer against the same number of unfused layers stacked, to show that fusion
keeps serving cost flat.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from eul.bench.envelope import write_result
from eul.data.records import LABEL_WORDS
from eul.fusion.fuse import FusionState, add_fused_layer, add_shared_fused_layer, fuse, fuse_shared
from eul.fusion.statistics import FusionStats
from eul.layers import LayerConfig
from eul.model.memory import measure_peak_mb
from eul.model.text_model import ModelSpec, TextModel

COUNTS = (1, 10, 100, 1000)
TOKENS_PER_REQUEST = 200
STACKED_LIMIT = 100


def synthetic_stats(
    positions: Sequence[str],
    d_model: int,
    tokens: int,
    generator: torch.Generator,
    d_in: int | None = None,
) -> FusionStats:
    """One request's statistics from random inputs (of size d_in) and a random linear layer."""
    stats = FusionStats.zeros(positions, d_model, d_in)
    d_in = d_model if d_in is None else d_in
    for p in positions:
        hidden = torch.randn(tokens, d_in, generator=generator, dtype=torch.float64)
        x = torch.cat([hidden, torch.ones(tokens, 1, dtype=torch.float64)], dim=1)
        y = x @ (0.01 * torch.randn(d_in + 1, d_model, generator=generator, dtype=torch.float64))
        stats.gram[p] = x.T @ x
        stats.cross[p] = x.T @ y
        stats.count[p] = tokens
        stats.target_sq[p] = float((y * y).sum())
    return stats


def forward_ms(tm: TextModel, batch: dict[str, torch.Tensor], repeats: int = 5) -> float:
    """The median time of one forward pass over `batch`, in milliseconds."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            started = time.perf_counter()
            tm.logits(batch)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def run_fusion_scale(
    counts: Sequence[int] = COUNTS,
    spec: ModelSpec | None = None,
    tokens_per_request: int = TOKENS_PER_REQUEST,
    stacked_limit: int = STACKED_LIMIT,
    seed: int = 0,
) -> list[dict[str, float]]:
    """For each N: seconds and peak MiB to fuse N requests, and forward time per batch with
    the fused layer and with N unfused layers stacked (up to `stacked_limit`)."""
    spec = spec or ModelSpec()
    texts = [f"the product number {i} was {LABEL_WORDS[i % 2]}" for i in range(64)]
    tm = TextModel.create(texts + list(LABEL_WORDS), spec, seed=seed)
    layers = tm.unlearning_layers()
    batch = tm.batch(texts, [LABEL_WORDS[i % 2] for i in range(64)])
    base_ms = forward_ms(tm, batch)
    generator = torch.Generator().manual_seed(seed)
    config = LayerConfig()
    positions = layers.position_names
    anchor = synthetic_stats(positions, layers.d_model, 1000, generator, config.width)
    rows = []
    for n in counts:
        requests = [
            synthetic_stats(positions, layers.d_model, tokens_per_request, generator)
            for _ in range(n)
        ]
        features = [
            synthetic_stats(positions, layers.d_model, tokens_per_request, generator, config.width)
            for _ in range(n)
        ]
        ups = [
            {
                p: 0.01 * torch.randn(config.width + 1, layers.d_model, generator=generator)
                for p in positions
            }
            for _ in range(n)
        ]

        def linear(requests: list[FusionStats] = requests) -> dict:
            total = requests[0]
            for extra in requests[1:]:
                total = total + extra
            return fuse(total)

        def shared(features: list[FusionStats] = features, ups: list[dict] = ups) -> dict:
            state = FusionState.empty(layers, config)
            for i, (stats, up) in enumerate(zip(features, ups, strict=True)):
                state.add_up(f"request-{i}", up, stats)
            return fuse_shared(state, "sum", anchor=anchor, anchor_weight=1.0)

        row: dict[str, float] = {"requests": n}
        for form, work in (("shared", shared), ("linear", linear)):
            started = time.perf_counter()
            work()
            row[f"fuse_s_{form}"] = time.perf_counter() - started
            _, row[f"fuse_peak_mb_{form}"] = measure_peak_mb(work)
        add_shared_fused_layer(layers, f"fused-{n}", config, shared())
        add_fused_layer(layers, f"linear-{n}", linear())
        row["forward_ms_base"] = base_ms
        with layers.only([f"fused-{n}"]):
            row["forward_ms_fused"] = forward_ms(tm, batch)
        with layers.only([f"linear-{n}"]):
            row["forward_ms_linear"] = forward_ms(tm, batch)
        row["forward_ms_stacked"] = float("nan")
        if n <= stacked_limit:
            names = [f"stack-{n}-{i}" for i in range(n)]
            for name in names:
                layers.add_layer(name, config)
            with layers.only(names):
                row["forward_ms_stacked"] = forward_ms(tm, batch)
            for name in names:
                layers.remove_layer(name)
        layers.remove_layer(f"fused-{n}")
        layers.remove_layer(f"linear-{n}")
        rows.append(row)
    return rows


def format_fusion_scale(rows: list[dict[str, float]]) -> str:
    lines = [
        "| requests | fuse s (shared basis, anchored) | peak MB | fuse s (linear) | peak MB "
        "| forward ms: base | fused | linear | stacked, unfused |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stacked = r["forward_ms_stacked"]
        stacked_cell = "-" if stacked != stacked else f"{stacked:.1f}"
        lines.append(
            f"| {r['requests']} | {r['fuse_s_shared']:.4f} | {r['fuse_peak_mb_shared']:.1f} | "
            f"{r['fuse_s_linear']:.4f} | {r['fuse_peak_mb_linear']:.1f} | "
            f"{r['forward_ms_base']:.1f} | {r['forward_ms_fused']:.1f} | "
            f"{r['forward_ms_linear']:.1f} | {stacked_cell} |"
        )
    return "\n".join(lines)


def draw_fusion_scale(report: dict, path: str | Path) -> list[Path]:
    """The figure beside the JSON at `path` ({"fusion_scale": rows}): fusion time and memory,
    and the serving cost, against the number of requests."""
    from eul.evaluate.plots import plot_fusion_scale, sibling

    rows = report["fusion_scale"]
    if not rows:
        return []
    title = "fusing N requests: cost of the fusion, and of serving the result"
    return [plot_fusion_scale(rows, sibling(path, "cost"), title)]


def save_fusion_scale(report: dict, path: str | Path, seed: int = 0) -> list[Path]:
    """The result of a run with the default sizes ({"fusion_scale": rows}) as JSON at `path`
    in the result envelope, its table as Markdown beside it, and its figure; returns every
    file written. It runs on the CPU."""
    rows = report["fusion_scale"]
    settings = {
        "counts": [row["requests"] for row in rows],
        "spec": asdict(ModelSpec()),
        "tokens_per_request": TOKENS_PER_REQUEST,
        "stacked_limit": STACKED_LIMIT,
        "seed": seed,
    }
    written = write_result(path, "fusion_scale", report, format_fusion_scale(rows), settings)
    return [*written, *draw_fusion_scale(report, Path(path))]
