"""One benchmark over several seeds, each a new base model and forget set: every figure as
its mean and spread, so that no conclusion rests on one base model."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

# The figures summed up over seeds, with how the table shows them.
FIGURES = (
    ("test_acc", "test"),
    ("forget_acc", "forget"),
    ("forget_memorised_acc", "memorised"),
    ("mia_auc", "MIA AUC"),
    ("privleak", "PrivLeak"),
    ("update_s", "update s"),
)
# The generation benchmark's figures (`eul.bench.generation`).
GENERATION_FIGURES = (
    ("test_rougeL", "test R-L"),
    ("forget_rougeL", "forget R-L"),
    ("secret_extraction", "secrets extracted"),
    ("mia_auc", "MIA AUC"),
    ("privleak", "PrivLeak"),
    ("update_s", "update s"),
)
# The figures of the attacks table (`eul.bench.attacks`), summed up the same way.
ATTACK_FIGURES = FIGURES[:-1]


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (None for one value), min, max and count of the
    values that are numbers (None and NaN left out)."""
    kept = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not kept:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(kept) / len(kept)
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1)) if len(kept) > 1 else None
    return {"mean": mean, "std": std, "min": min(kept), "max": max(kept), "n": len(kept)}


def summarise(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict]]:
    """method -> figure -> spread over the reports (each a benchmark report with `methods`);
    a method missing from a report counts as missing there."""
    names = list(dict.fromkeys(name for r in reports for name in r["methods"]))
    summary: dict[str, dict[str, dict]] = {}
    for name in names:
        rows = [r["methods"].get(name, {}) for r in reports]
        keys = list(dict.fromkeys(k for row in rows for k in row))
        summary[name] = {k: spread([row.get(k) for row in rows]) for k in keys}
    return summary


def summarise_attacks(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict]]:
    """attack -> model -> figure -> spread over the reports that hold attacks."""
    attacked = [r["attacks"] for r in reports if "attacks" in r]
    names = list(dict.fromkeys(name for attacks in attacked for name in attacks))
    return {
        name: summarise([{"methods": attacks.get(name, {})} for attacks in attacked])
        for name in names
    }


def run_seeds(run: Callable[[int], dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """`run(seed)` for each seed; the summary, and each seed's report less what it keeps in
    memory only (`mia_roc`, `run`), under `per_seed`."""
    if not seeds:
        raise ValueError("give at least one seed")
    reports = [run(seed) for seed in seeds]
    per_seed = [{k: v for k, v in r.items() if k not in ("mia_roc", "run")} for r in reports]
    result: dict[str, Any] = {"seeds": list(seeds), "methods": summarise(reports)}
    if any("attacks" in r for r in reports):
        result["attacks"] = summarise_attacks(reports)
    result["per_seed"] = per_seed
    if "run" in reports[0]:
        result["run"] = {**reports[0]["run"], "seeds": list(seeds)}
    return result


def _cell(figure: dict) -> str:
    if figure["mean"] is None:
        return "-"
    if figure["std"] is None:
        return f"{figure['mean']:.3f}"
    return f"{figure['mean']:.3f} ± {figure['std']:.3f}"


def format_seeds(result: dict[str, Any], figures: Sequence[tuple[str, str]] = FIGURES) -> str:
    """The summary as a Markdown table: mean ± standard deviation over the seeds, and each
    method's distance to the oracle's mean forget accuracy and MIA AUC."""
    seeds = result["seeds"]
    methods = result["methods"]
    oracle = methods.get("oracle", {})
    header = ["method", *(title for _, title in figures), f"|Δ {figures[1][1]}|", "|Δ MIA|"]
    lines = [
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± standard deviation",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, measured in methods.items():
        cells = [name] + [_cell(measured.get(key, spread([]))) for key, _ in figures]
        for key in (figures[1][0], "mia_auc"):
            mine, theirs = measured.get(key, {}).get("mean"), oracle.get(key, {}).get("mean")
            cells.append("-" if mine is None or theirs is None else f"{abs(mine - theirs):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    gates = gate_counts(result.get("per_seed", []))
    if gates:
        lines += ["", "Nightly gates passed, per model: " + ", ".join(
            f"{name} {passed}/{total}" for name, (passed, total) in gates.items()
        )]  # fmt: skip
    if result.get("attacks"):
        lines += ["", *_attack_lines(result["attacks"])]
    return "\n".join(lines)


def gate_counts(per_seed: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """model -> (seeds whose nightly gates it passed, seeds it was gated at)."""
    counts: dict[str, tuple[int, int]] = {}
    for report in per_seed:
        for name, row in report.get("gate_check", {}).items():
            passed, total = counts.get(name, (0, 0))
            counts[name] = (passed + bool(row["passed"]), total + 1)
    return counts


def _attack_lines(attacks: dict[str, dict[str, dict]]) -> list[str]:
    """The attacks, mean ± standard deviation over the seeds (PrivLeak against the oracle
    under the same attack)."""
    header = ["attack", "model", *(title for _, title in ATTACK_FIGURES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for attack, models in attacks.items():
        for name, figures in models.items():
            cells = [attack, name] + [
                _cell(figures.get(key, spread([]))) for key, _ in ATTACK_FIGURES
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines
