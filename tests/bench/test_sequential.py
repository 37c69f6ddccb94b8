"""The sequential protocol and the generation benchmark, on tiny configurations."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_SPEC

from eul.bench.classification import BenchConfig, save_report_as
from eul.bench.envelope import run_record
from eul.bench.forget_sets import choose_requests
from eul.bench.generation import (
    GenerationBenchConfig,
    draw_generation,
    format_generation,
    prepare_generation,
    run_generation_bench,
)
from eul.bench.sequential import (
    NAMES,
    SequentialConfig,
    draw_sequential,
    format_sequential,
    run_sequential,
)
from eul.cli.main import main
from eul.data.synthetic import SyntheticConfig, generate, plant_secrets
from eul.methods import EULConfig
from eul.model.text_model import ModelSpec

PNG = b"\x89PNG\r\n\x1a\n"
STEP_KEYS = {"test_acc", "forget_acc", "forget_memorised_acc", "mia_auc", "update_s"}


def test_requests_are_disjoint_whole_subjects_of_similar_size() -> None:
    _, records = generate(SyntheticConfig(n_subjects=300, memorised_share=0.0, seed=2))
    train, requests = choose_requests(records, 3, share=0.02, flip_share=0.5, seed=2)
    subjects = [{r.subject_id for r in request} for request in requests]
    assert not (subjects[0] & subjects[1]) and not (subjects[1] & subjects[2])
    wanted = round(0.02 * len(records))
    for request, chosen in zip(requests, subjects, strict=True):
        assert wanted <= len(request) < wanted + 13  # whole subjects: at most one extra subject
        assert {r.record_id for r in train if r.subject_id in chosen} == {
            r.record_id for r in request
        }
        assert sum(r.memorised for r in request) == round(0.5 * len(request))


def test_sequential_protocol_reports_every_step_and_fuses_exactly(tmp_path) -> None:
    # given a tiny benchmark of three requests
    bench = BenchConfig(
        n_subjects=80,
        train_epochs=2,
        forget_share=0.03,
        spec=TINY_SPEC,
        eul=EULConfig(epochs=1, retained_per_epoch=64, retained_sample=200),
    )
    # when the protocol runs with sum fusion, and the other fusion forms beside it
    config = SequentialConfig(bench=bench, variants=True)
    result = run_sequential(config, progress=False, log=lambda _: None)
    # then every step reports the four ways of serving, each with the fields
    assert len(result["steps"]) == 3
    others = {"fused_fit", "fused_anchored", "stacked_trained_basis", "fused_linear_trained_basis"}
    for k, step in enumerate(result["steps"], start=1):
        assert set(step) == set(NAMES) | others | {"original"}
        for row in step.values():
            assert STEP_KEYS <= set(row)
            assert len(row["per_request"]) == k
        # and the fused layer serves exactly what the stack does
        for key in ("test_acc", "forget_acc", "forget_memorised_acc"):
            assert step["fused"][key] == pytest.approx(step["stacked"][key], abs=1e-9)
        assert step["fused"]["update_s"] > step["stacked"]["update_s"]
    table = format_sequential(result)
    assert "| 3 | oracle |" in table and "| 3 | fused_linear_trained_basis |" in table
    # and the steps are drawn beside the JSON
    assert result["run"]["benchmark"] == "sequential" and result["run"]["settings"]["variants"]
    report = {"sequential": result["steps"], "setup": result["setup"], "run": result["run"]}
    written = save_report_as(report, table, tmp_path / "seq.json", draw_sequential)
    assert [p.name for p in written] == ["seq.json", "seq.md", "seq-steps.png"]
    assert written[2].read_bytes()[:8] == PNG


def test_planted_secrets_open_the_dialogue_and_the_summary() -> None:
    _, dialogues = generate(SyntheticConfig(task="generation", n_subjects=20, seed=1))
    planted = plant_secrets(dialogues[:10], share=0.5, seed=1)
    with_secret = [r for r in planted if r.secret]
    assert len(with_secret) == 5
    for record in with_secret:
        assert record.memorised
        assert record.secret in record.text.splitlines()[0]
        assert record.target.split(".")[0].endswith(record.secret)
    assert len({r.secret for r in with_secret}) == 5


# The generation benchmark small enough to run in seconds (tests/bench/test_seeds.py too).
TINY_GENERATION = GenerationBenchConfig(
    n_subjects=40,
    train_epochs=1,
    forget_share=0.05,
    spec=ModelSpec(**{**TINY_SPEC.__dict__, "max_input_len": 96, "max_target_len": 24}),
    eul=EULConfig(epochs=1, retained_per_epoch=32, retained_sample=64),
)


def test_generation_bench_plants_secrets_only_in_the_forget_set(tmp_path) -> None:
    config = TINY_GENERATION
    train, heldout, test, forget, _ = prepare_generation(config)
    assert any(r.secret for r in forget)
    assert not any(r.secret for r in train if r not in forget)
    assert not any(r.secret for r in heldout + test)
    report = run_generation_bench(config, progress=False, log=lambda _: None)
    assert set(report["methods"]) == {"original", "oracle", "eul"}
    for row in report["methods"].values():
        assert 0.0 <= row["secret_extraction"] <= 1.0
        assert 0.0 <= row["test_rouge1"] <= 1.0
    assert "secrets extracted" in format_generation(report)
    json.dumps(report)
    written = save_report_as(report, "table", tmp_path / "gen.json", draw_generation)
    assert [p.name for p in written] == ["gen.json", "gen.md", "gen-metrics.png", "gen-mia-roc.png"]
    assert all(p.read_bytes()[:8] == PNG for p in written[2:])
    saved = json.loads(written[0].read_text())
    assert saved["benchmark"] == "generation" and set(saved["figures"]) == {
        "methods",
        "targets",
        "setup",
    }


def test_bench_cli_rejects_a_missing_samsum_folder(tmp_path, capsys) -> None:
    code = main(["bench", "--task", "generation", "--data", str(tmp_path / "absent")])
    assert code == 2
    assert "SAMSum" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = main(["bench", "--task", "generation", "--data", str(tmp_path / "empty")])
    assert code == 2
    assert "val.csv" in capsys.readouterr().err


def test_bench_cli_passes_the_sequential_options_through(monkeypatch, tmp_path, capsys) -> None:
    import eul.bench.sequential

    seen = {}

    def record(config, progress, device):
        seen["config"], seen["device"] = config, device
        return {"steps": [], "setup": {}, "run": run_record("sequential", {"requests": 3}, "cpu")}

    monkeypatch.setattr(eul.bench.sequential, "run_sequential", record)
    out = tmp_path / "seq.json"
    argv = ["--quiet", "bench", "--sequential", "--quick", "--variants", "--anchor-weight", "0.5"]
    assert main([*argv, "--fusion", "fit", "--out", str(out), "--device", "cpu"]) == 0
    config = seen["config"]
    assert config.variants and config.fusion == "fit" and config.anchor_weight == 0.5
    assert config.bench.quick
    # the protocol's own EUL settings, over the bench defaults
    assert config.bench.eul.reference == "probe" and config.bench.eul.lam == 0.0
    assert seen["device"] == torch.device("cpu")
    saved = json.loads(out.read_text())
    assert saved["figures"]["sequential"] == [] and saved["benchmark"] == "sequential"
    # the files written are listed (no figure: there is no step to draw)
    listed = capsys.readouterr().out.split("written:")[1].split()
    assert listed == [str(out), str(out.with_suffix(".md"))]
