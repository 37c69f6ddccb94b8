"""Smoke test of device placement on a CUDA GPU: every step runs there, nothing stays behind.

    python scripts/gpu_smoke.py

On a machine with CUDA it trains a tiny T5 for a few steps, runs an EUL update (and a second
one held off the first's tokens), captures fusion statistics, fuses, evaluates, generates,
saves and reloads, all on the GPU, and prints each step's time and the devices of every
tensor it checked. It exits 1 if any checked tensor is on the wrong device (or a result
differs from the one the CPU gets beyond float tolerance), 0 otherwise; it takes well under
a minute. Without CUDA it prints that it was skipped and exits 0.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers

# Run from a checkout without installing it: the repository root holds the `eul` package.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eul.data.records import LABEL_WORDS, split_records  # noqa: E402
from eul.data.synthetic import SyntheticConfig, generate  # noqa: E402
from eul.evaluate.metrics import EvalSets, evaluate  # noqa: E402
from eul.fusion.fuse import FusionState, add_shared_fused_layer, fuse_shared  # noqa: E402
from eul.fusion.statistics import capture_statistics, keep_grams  # noqa: E402
from eul.methods import EULConfig, ForgetTask, get_method  # noqa: E402
from eul.model.device import resolve_device  # noqa: E402
from eul.model.memory import measure_peak_mb  # noqa: E402
from eul.model.text_model import ModelSpec, TextModel  # noqa: E402
from eul.model.training import TrainConfig, train_full  # noqa: E402

SPEC = ModelSpec(vocab_size=600, d_model=64, num_layers=2, num_heads=4, d_ff=256)
GPT2_SPEC = ModelSpec(family="gpt2", vocab_size=600, d_model=64, num_layers=2, num_heads=4)
# GPU and CPU kernels sum in other orders: results agree to this, not to the last bit
TOLERANCE = 1e-3


class Report:
    """What the smoke test found: device checks and timings, printed as they come."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.failures: list[str] = []
        self.seconds: dict[str, float] = {}

    def devices(self, what: str, tensors: Iterable[torch.Tensor], expected: torch.device) -> None:
        """Check that every tensor in `tensors` is on `expected`, and print where they are."""
        found = Counter(str(t.device) for t in tensors)
        shown = ", ".join(f"{n} on {d}" for d, n in sorted(found.items())) or "no tensors"
        ok = bool(found) and set(found) == {str(expected)}
        self.out(f"{'ok  ' if ok else 'FAIL'} {what}: {shown} (expected {expected})")
        if not ok:
            self.failures.append(f"{what}: {shown}, expected {expected}")

    def check(self, what: str, ok: bool, detail: str) -> None:
        """A check that is not about devices (a value, a round trip)."""
        self.out(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
        if not ok:
            self.failures.append(f"{what}: {detail}")

    @contextmanager
    def timed(self, step: str, device: torch.device) -> Iterator[None]:
        """Time a step; on a GPU, wait for its queued kernels so the time is the real one."""
        started = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds[step] = time.perf_counter() - started
        self.out(f"time {step}: {self.seconds[step]:.2f} s")


def _layer_tensors(tm: TextModel, name: str) -> list[torch.Tensor]:
    hosted = tm.unlearning_layers().layers[name]
    return [*hosted.parameters(), *hosted.buffers()]


def run_smoke(device: torch.device, out: Callable[[str], None] = print) -> Report:
    """Every step of the pipeline on `device`, checked; returns the report (failures listed)."""
    report = Report(out)
    cpu = torch.device("cpu")
    _, records = generate(SyntheticConfig(n_subjects=60, memorised_share=0.05, seed=3))
    train, heldout, test = split_records(records, seed=3)
    subjects = sorted({r.subject_id for r in train if r.memorised})[:4]
    forget = [r for r in train if r.subject_id in subjects]
    retained = [r for r in train if r.subject_id not in subjects]
    sets = EvalSets(test=test, retained=retained[:100], forget=forget, unseen=heldout)

    with report.timed("build and move", device):
        tm = TextModel.create([r.text for r in train] + list(LABEL_WORDS), SPEC, seed=0)
        tm.to(device)
    report.devices("base weights", tm.model.parameters(), device)

    batch = tm.batch([r.text for r in forget], [r.target for r in forget])
    report.devices("batch", batch.values(), device)
    report.devices("record batches", next(iter(tm.record_batches(forget, 4))).values(), device)
    by_ids = tm.batch_from_ids([[5, 6, 1], [7, 1]], [[8, 1], [9, 9, 1]])
    report.devices("batch from ids", by_ids.values(), device)
    with torch.no_grad():
        report.devices("logits", [tm.logits(batch)], device)

    with report.timed("train (base model)", device):
        stats = train_full(tm, train, TrainConfig(epochs=3, batch_size=32, lr=3e-3), progress=False)
    report.devices("base weights after training", tm.model.parameters(), device)
    report.check("training loss", stats["final_loss"] < 5.0, f"{stats['final_loss']:.3f}")

    with report.timed("save from the device and load", device):
        folder = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
        tm.save(folder / "model")
        loaded = TextModel.load(folder / "model")
    report.devices("weights after save", tm.model.parameters(), device)
    report.devices("loaded weights", loaded.model.parameters(), cpu)
    saved_equal = all(
        torch.equal(value.cpu(), loaded.model.state_dict()[key])
        for key, value in tm.model.state_dict().items()
    )
    report.check("saved weights", saved_equal, "equal to the device's weights")

    with report.timed("score on the device and on the CPU", device):
        on_device = tm.score(forget)
        on_cpu = loaded.score(forget)
    gap = max(
        abs(a - b)
        for x, y in zip(on_device, on_cpu, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    report.check("scores against the CPU", gap < TOLERANCE, f"largest difference {gap:.2e}")
    report.check(
        "scores are Python floats",
        all(isinstance(v, float) for row in on_device for v in row),
        "returned on the CPU",
    )

    first_forget = [r for r in forget if r.subject_id in subjects[:2]]
    second_forget = [r for r in forget if r.subject_id in subjects[2:]]
    eul = get_method("eul", config=EULConfig(epochs=2, retained_sample=200, keep_weight=1.0))
    with report.timed("EUL update", device):
        task = ForgetTask(first_forget, retained, heldout, name="first")
        result = eul.run(tm, task, progress=False)
    report.devices("EUL layer", _layer_tensors(tm, "first"), device)
    cached = [t for pair in eul._cache.rows.values() for t in pair]
    report.devices("teacher cache", cached, device)
    report.check("EUL history", len(result.history) >= 1, f"{len(result.history)} epoch(s)")

    with report.timed("fusion statistics", device):
        features = capture_statistics(tm, "first", first_forget, space="features")
        hidden = capture_statistics(tm, "first", first_forget)
    sums = [*features.gram.values(), *features.cross.values(), *hidden.gram.values()]
    report.devices("fusion statistics (float64 sums)", sums, cpu)
    report.check(
        "fusion statistics dtype",
        all(t.dtype == torch.float64 for t in sums),
        "float64",
    )

    with report.timed("EUL update held off the first request", device):
        task = ForgetTask(second_forget, retained, heldout, "second", keep_grams(features))
        eul.run(tm, task, progress=False)
    report.devices("second EUL layer", _layer_tensors(tm, "second"), device)

    with report.timed("fuse", device):
        layers = tm.unlearning_layers()
        state = FusionState.empty(layers, layers.configs["first"])
        state.add(layers, "first", features)
        second = capture_statistics(tm, "second", second_forget, space="features")
        state.add(layers, "second", second)
        add_shared_fused_layer(layers, "fused", state.config, fuse_shared(state, "sum"))
    report.devices("fused layer", _layer_tensors(tm, "fused"), device)
    with torch.no_grad(), layers.only(["first", "second"]):
        stacked = tm.logits(batch)
    with torch.no_grad(), layers.only(["fused"]):
        fused = tm.logits(batch)
    gap = float((stacked - fused).abs().max())
    report.check("fused layer against the stack", gap < TOLERANCE, f"largest difference {gap:.2e}")

    with report.timed("evaluate", device), layers.only(["fused"]):
        metrics, losses = evaluate(tm, sets)
    report.check(
        "metrics are Python floats",
        all(isinstance(v, float) for v in [*metrics.values(), *losses]),
        f"test_acc {metrics['test_acc']:.3f}, mia_auc {metrics['mia_auc']:.3f}",
    )

    with report.timed("generate (t5 and gpt2)", device), layers.only(["fused"]):
        texts = tm.generate([r.text for r in test[:8]], max_new_tokens=4)
        gpt2 = TextModel.create([r.text for r in train] + list(LABEL_WORDS), GPT2_SPEC).to(device)
        causal = gpt2.batch([r.text for r in forget], [r.target for r in forget])
        gpt2_texts = gpt2.generate([r.text for r in test[:8]], max_new_tokens=4)
    report.devices("causal batch", causal.values(), device)
    report.check(
        "generated texts",
        len(texts) == len(gpt2_texts) == 8 and all(isinstance(t, str) for t in texts + gpt2_texts),
        "8 + 8 strings",
    )

    with report.timed("oracle retrain and peak memory", device):
        oracle = get_method("retrain", train=TrainConfig(epochs=1, batch_size=32))
        retrained = oracle.run(tm, ForgetTask(forget, retained), progress=False).model
        _, peak = measure_peak_mb(lambda: tm.score(forget), tm.model)
    report.devices("retrained weights", retrained.model.parameters(), device)
    report.check("peak memory", peak > 0, f"{peak:.1f} MiB")

    with report.timed("copy and move back to the CPU", device):
        clone = tm.copy()
        back = tm.copy().to("cpu")
        back_scores = back.score(forget)
    report.devices("copy", clone.model.parameters(), device)
    report.devices("copy moved to the CPU", back.model.parameters(), cpu)
    report.check("copy moved to the CPU", back_scores == on_cpu, "scores as the saved model's")
    return report


def main() -> int:
    if not torch.cuda.is_available():
        print(f"gpu smoke test skipped: torch {torch.__version__} sees no CUDA GPU")
        return 0
    device = resolve_device("cuda")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    name = torch.cuda.get_device_name(device)
    print(f"gpu smoke test on {device} ({name}), torch {torch.__version__}")
    started = time.perf_counter()
    report = run_smoke(device)
    print(f"total {time.perf_counter() - started:.1f} s")
    if report.failures:
        print(f"{len(report.failures)} check(s) failed:")
        for failure in report.failures:
            print(f"  {failure}")
        return 1
    print("every checked tensor was on the expected device")
    return 0


if __name__ == "__main__":
    sys.exit(main())
