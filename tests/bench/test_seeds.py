"""The benchmark over several seeds: each figure's mean and spread."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from test_bench import TINY_BENCH

from eul.bench.classification import run_bench, save_report_as
from eul.bench.seeds import format_seeds, run_seeds, spread, summarise


def test_spread_is_mean_sample_deviation_and_range_of_the_numbers():
    figure = spread([0.5, 0.7, None, float("nan"), 0.6])
    assert figure["n"] == 3 and figure["mean"] == pytest.approx(0.6)
    assert figure["std"] == pytest.approx(0.1) and (figure["min"], figure["max"]) == (0.5, 0.7)
    assert spread([0.4])["std"] is None and spread([None])["mean"] is None


def test_summarise_takes_every_method_and_figure_of_every_report():
    reports = [
        {"methods": {"oracle": {"forget_acc": 0.5}, "eul": {"forget_acc": 0.3, "x": 1.0}}},
        {"methods": {"oracle": {"forget_acc": 0.7}, "eul": {"forget_acc": 0.5}}},
    ]
    summary = summarise(reports)
    assert summary["oracle"]["forget_acc"]["mean"] == pytest.approx(0.6)
    assert summary["eul"]["x"]["n"] == 1  # missing from the second report
    table = format_seeds({"seeds": [0, 1], "methods": summary})
    assert "| eul | - | 0.400 ± 0.141 |" in table
    assert table.splitlines()[0] == "2 seeds (0, 1): mean ± standard deviation"


def test_two_seeds_of_a_tiny_bench_give_two_base_models_and_their_spread(tmp_path):
    seen: list[int] = []

    def one(seed: int) -> dict:
        seen.append(seed)
        return run_bench(replace(TINY_BENCH, seed=seed), progress=False, log=lambda _: None)

    result = run_seeds(one, [3, 4])
    assert seen == [3, 4] and result["seeds"] == [3, 4]
    # each seed is its own base model and forget set: the per-seed figures differ
    per_seed = [r["methods"]["original"]["mia_auc"] for r in result["per_seed"]]
    assert per_seed[0] != per_seed[1]
    test = result["methods"]["eul"]["test_acc"]
    assert test["n"] == 2 and test["min"] <= test["mean"] <= test["max"]
    assert math.isclose(test["mean"], sum(r["methods"]["eul"]["test_acc"]
                                          for r in result["per_seed"]) / 2)  # fmt: skip
    # and the result is written in the envelope, with its table
    save_report_as(result, format_seeds(result), tmp_path / "seeds.json")
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["figures"]["seeds"] == [3, 4] and "mia_roc" not in json.dumps(saved)
    assert "± " in (tmp_path / "seeds.md").read_text()


def test_generation_over_two_seeds_sums_up_rouge_secrets_and_privleak():
    from test_sequential import TINY_GENERATION

    from eul.bench.generation import run_generation_bench
    from eul.bench.seeds import GENERATION_FIGURES

    config = TINY_GENERATION
    result = run_seeds(
        lambda seed: run_generation_bench(replace(config, seed=seed), False, lambda _: None),
        [0, 1],
    )
    # each seed a new base model: the two reports differ, and every figure has two values
    assert [r["setup"]["seed"] for r in result["per_seed"]] == [0, 1]
    for key, _ in GENERATION_FIGURES[:-1]:
        assert result["methods"]["eul"][key]["n"] == 2, key
    assert result["methods"]["oracle"]["privleak"]["mean"] == 0
    table = format_seeds(result, GENERATION_FIGURES)
    assert "| method | test R-L | forget R-L | secrets extracted |" in table
    assert "|Δ forget R-L|" in table


def test_the_sequential_protocol_is_summed_up_after_its_last_request():
    from eul.bench.sequential import after_last_step

    def step(forget: float) -> dict:
        row = {"test_acc": 0.8, "forget_acc": forget, "forget_memorised_acc": 0.2,
               "mia_auc": 0.3, "update_s": 1.0}  # fmt: skip
        return {"fused": row, "oracle": {**row, "forget_acc": 0.5}}

    runs = {0: {"steps": [step(0.9), step(0.6)], "setup": {}}, 1: {"steps": [step(0.4)]}}
    result = run_seeds(lambda seed: after_last_step(runs[seed]), [0, 1])
    # each seed's last step is what is summed up: 0.6 at seed 0, 0.4 at seed 1
    assert result["methods"]["fused"]["forget_acc"]["mean"] == pytest.approx(0.5)
    assert result["per_seed"][0]["steps"][0]["fused"]["forget_acc"] == 0.9
    assert "| fused |" in format_seeds(result)
    with pytest.raises(ValueError, match="no step"):
        after_last_step({"steps": []})
