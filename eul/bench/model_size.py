"""One request end to end on a model of real size, on this machine: what a step costs.

The embedded model has 1.4M parameters; a user's is t5-base (220M) or larger. This builds
a model of the chosen size with random weights (the cost of a step does not depend on what
the weights know), and runs one request through what the pipeline does with it: layers
attached, EUL steps, fusion statistics captured, the layer fused, a few rows evaluated. It
reports seconds per step, the process's peak memory and the sizes of the files a request
leaves (layer and statistics, purged with the request) and a version keeps (base, fused
layer). Few rows and one epoch: the figures are costs, not forgetting.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eul.model.text_model import ModelSpec
from eul.runtime.scratch import scratch_folder

# d_model, blocks, heads and feed-forward width of the public T5 checkpoints (random here).
SIZES = {
    "tiny": ModelSpec(),
    "small": ModelSpec(vocab_size=32128, d_model=512, num_layers=6, num_heads=8, d_ff=2048),
    "base": ModelSpec(vocab_size=32128, d_model=768, num_layers=12, num_heads=12, d_ff=3072),
}


@dataclass(frozen=True)
class SizeConfig:
    """Which model, and how much of a request runs on it."""

    size: str = "base"
    forget_rows: int = 8
    retained_rows: int = 64
    heldout_rows: int = 32
    epochs: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}: one of {', '.join(SIZES)}")


def _folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def _peak_mb() -> float:
    """The process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(spec: ModelSpec, texts: list[str], seed: int):
    """A model of `spec` with random weights, its vocabulary the size the checkpoints have
    (a tokenizer trained on a few rows has fewer words; the extra rows are simply unused)."""
    import torch

    from eul.model.text_model import TextModel, build_model
    from eul.model.tokenizer import train_tokenizer

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(texts, min(spec.vocab_size, 4000))
    model = build_model(tokenizer, spec, vocab_size=spec.vocab_size)
    return TextModel(model, tokenizer, spec.max_input_len, spec.max_target_len)


def run_model_size(config: SizeConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One request on a model of `config.size`: its costs, step by step."""
    from eul.data.records import LABEL_WORDS, split_records
    from eul.data.synthetic import SyntheticConfig, generate
    from eul.evaluate.metrics import EvalSets, evaluate
    from eul.fusion.fuse import FusionState, add_shared_fused_layer, fuse_shared
    from eul.fusion.statistics import capture_statistics, save_request_statistics
    from eul.methods import EULConfig, ForgetTask, get_method

    spec = SIZES[config.size]
    _, records = generate(SyntheticConfig(n_subjects=40, memorised_share=0.1, seed=config.seed))
    train, heldout, test = split_records(records, seed=config.seed)
    forget = train[: config.forget_rows]
    retained = train[config.forget_rows : config.forget_rows + config.retained_rows]
    heldout = heldout[: config.heldout_rows]
    seconds: dict[str, float] = {}

    def timed(step: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        done = work()
        seconds[step] = time.perf_counter() - started
        log(f"{step}: {seconds[step]:.1f} s")
        return done

    tm = timed("build", lambda: _build(spec, [r.text for r in records] + list(LABEL_WORDS),
                                       config.seed))  # fmt: skip
    parameters = sum(p.numel() for p in tm.model.parameters())
    log(f"{config.size}: {parameters / 1e6:.1f}M parameters")
    eul_config = EULConfig(epochs=config.epochs, retained_sample=config.retained_rows)
    method = get_method("eul", config=eul_config)
    task = ForgetTask(forget, retained, heldout, name="request")
    result = timed("eul_update", lambda: method.run(tm, task, progress=False))
    steps = max(1, len(result.history)) * (
        math.ceil(len(retained) / eul_config.batch_size)
        + math.ceil(len(forget) / eul_config.forget_batch_size)
    )
    layers = tm.unlearning_layers()
    # a named scratch folder: it holds a request's layer and statistics until the block ends
    with scratch_folder("model") as tmp:
        folder = Path(tmp)
        timed("statistics", lambda: save_request_statistics(tm, "request", forget,
                                                            folder / "request"))  # fmt: skip
        layers.save_layer("request", folder / "request")
        request_mb = _folder_mb(folder / "request")

        def fuse() -> None:
            state = FusionState.empty(layers, layers.configs["request"])
            state.add(
                layers, "request", capture_statistics(tm, "request", forget, space="features")
            )
            add_shared_fused_layer(layers, "fused", state.config, fuse_shared(state, "sum"))

        timed("fuse", fuse)
        sets = EvalSets(test=test[:16], retained=retained[:16], forget=forget, unseen=heldout)
        with layers.only(["fused"]):
            timed("evaluate", lambda: evaluate(tm, sets))
        layers.set_active([])
        timed("save_base", lambda: tm.save(folder / "base"))
        base_mb = _folder_mb(folder / "base")
    return {
        "size": config.size,
        "spec": asdict(spec),
        "parameters": parameters,
        "trainable_share": result.trainable_share,
        "rows": {"forget": len(forget), "retained": len(retained), "heldout": len(heldout)},
        "seconds": seconds,
        "eul_steps": steps,
        "seconds_per_step": seconds["eul_update"] / steps,
        "peak_rss_mb": _peak_mb(),
        "request_files_mb": request_mb,
        "base_files_mb": base_mb,
    }


def format_model_size(rows: list[dict[str, Any]]) -> str:
    """The measured costs per size as a Markdown table."""
    lines = [
        "| size | parameters | trainable share | EUL s/step | statistics s | fuse s | "
        "peak RSS MB | request files MB | base MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(
            f"| {r['size']} | {r['parameters'] / 1e6:.1f}M | {r['trainable_share']:.4f} | "
            f"{r['seconds_per_step']:.2f} | {s['statistics']:.1f} | {s['fuse']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['request_files_mb']:.1f} | {r['base_files_mb']:.1f} |"
        )
    return "\n".join(lines) + "\n"
