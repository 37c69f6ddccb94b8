"""How fusion scales with the number of requests: time, peak memory, inference cost.

Per-request statistics are synthetic here (random hidden states of the model's width and a
random linear target), since what is measured is the cost of accumulating and solving, not
the quality of the fit. Inference is timed on a real model with the fused layer against the
same number of unfused layers stacked, to show that fusion keeps serving cost flat.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from eul.data import LABEL_WORDS
from eul.fusion import FusionStats, add_fused_layer, fuse
from eul.memory import measure_peak_mb
from eul.model import ModelSpec, TextModel

COUNTS = (1, 10, 100, 1000)


def synthetic_stats(
    positions: Sequence[str], d_model: int, tokens: int, generator: torch.Generator
) -> FusionStats:
    """One request's statistics from random hidden states and a random linear layer."""
    stats = FusionStats.zeros(positions, d_model)
    for p in positions:
        hidden = torch.randn(tokens, d_model, generator=generator, dtype=torch.float64)
        x = torch.cat([hidden, torch.ones(tokens, 1, dtype=torch.float64)], dim=1)
        y = x @ (0.01 * torch.randn(d_model + 1, d_model, generator=generator, dtype=torch.float64))
        stats.gram[p] = x.T @ x
        stats.cross[p] = x.T @ y
        stats.count[p] = tokens
        stats.target_sq[p] = float((y * y).sum())
    return stats


def _forward_ms(tm: TextModel, batch: dict[str, torch.Tensor], repeats: int = 5) -> float:
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
    tokens_per_request: int = 200,
    stacked_limit: int = 100,
    seed: int = 0,
) -> list[dict[str, float]]:
    """For each N: seconds and peak MiB to fuse N requests, and forward time per batch with
    the fused layer and with N unfused layers stacked (up to `stacked_limit`)."""
    spec = spec or ModelSpec()
    texts = [f"the product number {i} was {LABEL_WORDS[i % 2]}" for i in range(64)]
    tm = TextModel.create(texts + list(LABEL_WORDS), spec, seed=seed)
    layers = tm.unlearning_layers()
    batch = tm.batch(texts, [LABEL_WORDS[i % 2] for i in range(64)])
    base_ms = _forward_ms(tm, batch)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in counts:
        requests = [
            synthetic_stats(layers.position_names, layers.d_model, tokens_per_request, generator)
            for _ in range(n)
        ]

        def accumulate_and_solve(requests: list[FusionStats] = requests) -> dict:
            total = requests[0]
            for extra in requests[1:]:
                total = total + extra
            return fuse(total)

        started = time.perf_counter()
        matrices = accumulate_and_solve()
        fuse_s = time.perf_counter() - started
        _, peak_mb = measure_peak_mb(accumulate_and_solve)
        add_fused_layer(layers, f"fused-{n}", matrices)
        layers.set_active([f"fused-{n}"])
        fused_ms = _forward_ms(tm, batch)
        stacked_ms = float("nan")
        if n <= stacked_limit:
            names = [f"stack-{n}-{i}" for i in range(n)]
            for name in names:
                layers.add_layer(name)
            layers.set_active(names)
            stacked_ms = _forward_ms(tm, batch)
            for name in names:
                layers.remove_layer(name)
        layers.remove_layer(f"fused-{n}")
        rows.append(
            {
                "requests": n,
                "fuse_s": fuse_s,
                "fuse_peak_mb": peak_mb,
                "forward_ms_base": base_ms,
                "forward_ms_fused": fused_ms,
                "forward_ms_stacked": stacked_ms,
            }
        )
    return rows


def format_fusion_scale(rows: list[dict[str, float]]) -> str:
    lines = [
        "| requests | fuse s | fuse peak MB | forward ms (base) | fused | stacked, unfused |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        stacked = (
            "-"
            if r["forward_ms_stacked"] != r["forward_ms_stacked"]
            else (f"{r['forward_ms_stacked']:.1f}")
        )
        lines.append(
            f"| {r['requests']} | {r['fuse_s']:.4f} | {r['fuse_peak_mb']:.1f} | "
            f"{r['forward_ms_base']:.1f} | {r['forward_ms_fused']:.1f} | {stacked} |"
        )
    return "\n".join(lines)
