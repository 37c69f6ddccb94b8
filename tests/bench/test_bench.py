"""The benchmark protocol and its report, on a tiny configuration."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from conftest import TINY_SPEC

from eul.bench.attacks import ATTACKS, TARGETED
from eul.bench.classification import (
    BenchConfig,
    format_table,
    load_bench_records,
    run_bench,
    save_report,
    target_bands,
)
from eul.bench.forget_sets import choose_forget
from eul.data.records import DataError
from eul.data.synthetic import SyntheticConfig, generate
from eul.methods import EULConfig

# The benchmark small enough to run in seconds (tests/bench/test_seeds.py runs it too).
TINY_BENCH = BenchConfig(
    n_subjects=60,
    train_epochs=2,
    forget_share=0.05,
    spec=TINY_SPEC,
    eul=EULConfig(epochs=1, retained_per_epoch=64),
)

METRICS = {
    "test_acc",
    "retained_acc",
    "forget_acc",
    "forget_memorised_acc",
    "mia_auc",
    "privleak",
    "ks_p",
    "update_s",
    "trainable_share",
    "peak_mem_mb",
}


ATTACKED_METRICS = {"test_acc", "forget_acc", "forget_memorised_acc", "mia_auc", "privleak"}


def test_forget_set_is_whole_subjects_with_half_of_the_rows_flipped() -> None:
    _, records = generate(SyntheticConfig(n_subjects=200, memorised_share=0.0, seed=1))
    train, forget = choose_forget(records, share=0.05, flip_share=0.5, seed=1)
    forget_subjects = {r.subject_id for r in forget}
    assert len(forget) >= 0.05 * len(records)
    assert {r.record_id for r in train if r.subject_id in forget_subjects} == {
        r.record_id for r in forget
    }
    flipped = [r for r in forget if r.memorised]
    assert len(flipped) == round(0.5 * len(forget))
    originals = {r.record_id: r for r in records}
    assert all(r.label != originals[r.record_id].label for r in flipped)
    assert all(r in train for r in forget)


def test_a_tiny_bench_reports_every_method_and_target(tmp_path) -> None:
    config = TINY_BENCH
    report = run_bench(config, progress=False, log=lambda _: None)
    assert set(report["methods"]) == {"original", "oracle", "finetune", "reverse_gradient", "eul"}
    for name, row in report["methods"].items():
        assert METRICS <= set(row), name
    assert report["methods"]["eul"]["trainable_share"] < 0.2
    # PrivLeak beside the MIA AUC: zero for the oracle, the relative AUC gap for the others
    oracle_auc = report["methods"]["oracle"]["mia_auc"]
    assert report["methods"]["oracle"]["privleak"] == 0
    for row in report["methods"].values():
        assert row["privleak"] == pytest.approx((row["mia_auc"] - oracle_auc) / oracle_auc)
    assert "PrivLeak" in format_table(report)
    assert report["memory"]["eul"] > 0
    assert len(report["targets"]) == 7
    written = save_report(report, tmp_path / "bench.json")
    enveloped = json.loads((tmp_path / "bench.json").read_text())
    assert enveloped["benchmark"] == "classification"
    assert enveloped["settings"]["n_subjects"] == 60 and enveloped["machine"]["device"] == "cpu"
    saved = enveloped["figures"]
    assert saved["methods"]["original"]["update_s"] is None
    assert "| eul |" in (tmp_path / "bench.md").read_text()
    assert "MIA AUC" in format_table(report)
    # the figures lie beside the JSON, under its stem, and are listed with it
    names = ["bench.json", "bench.md", "bench-metrics.png", "bench-mia-roc.png"]
    assert [p.name for p in written] == names
    for path in written[2:]:
        assert path.parent == tmp_path and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the ROC curves are drawn from the run, summed up per model, and not saved in the JSON
    assert set(report["mia_roc"]) == {"original", "oracle", "eul"}
    for name, curve in report["mia_roc"].items():
        assert curve["auc"]["loss"] == report["methods"][name]["mia_auc"]
    assert "mia_roc" not in saved
    # the nightly gates on each model, with the bands it was held to, saved and tabled
    gated = report["gate_check"]
    assert list(gated) == ["original", "oracle", "eul", "over_forgotten"]
    for name, row in gated.items():
        assert row["bands"]["forget_rows"] == report["setup"]["forget_rows"] > 0, name
        assert row["passed"] == (not row["reasons"]), name
        assert row["mia_auc"] == report["methods"].get(name, row)["mia_auc"]
    assert saved["gate_check"].keys() == gated.keys()
    assert "The nightly gates" in format_table(report)
    # the attacks: every attack on the original, the oracle and EUL, each held to the oracle
    # under the same attack, and saved with the rest
    attacks = report["attacks"]
    assert list(attacks) == list(ATTACKS) and saved["attacks"].keys() == attacks.keys()
    for attack, rows in attacks.items():
        assert list(rows) == ["original", "oracle", "eul"], attack
        for name, row in rows.items():
            assert ATTACKED_METRICS <= set(row), (attack, name)
        assert rows["oracle"]["privleak"] == 0
        assert rows["eul"]["privleak"] == pytest.approx(
            (rows["eul"]["mia_auc"] - rows["oracle"]["mia_auc"]) / rows["oracle"]["mia_auc"]
        )
    # unattacked, they are the models measured above; without its layer, EUL is the original
    for key in ("test_acc", "forget_acc", "forget_memorised_acc", "mia_auc"):
        for name in ("original", "oracle", "eul"):
            assert attacks["none"][name][key] == report["methods"][name][key]
        assert attacks["layer_removal"]["eul"][key] == report["methods"]["original"][key]
    removal = attacks["layer_removal"]
    assert [removal[n]["applies"] for n in ("original", "oracle", "eul")] == [False, False, True]
    assert [t["target"].split(":")[0] for t in report["attack_targets"]] == [
        f"after {attack}" for attack in TARGETED
    ]
    table = format_table(report)
    assert "| int4 | eul |" in table and "| relearn_similar | oracle |" in table
    assert "layer_removal: original hosts no unlearning layer" in table


def test_target_bands_are_the_targets_on_each_metric_scale() -> None:
    methods = {
        "original": {"test_acc": 0.9, "retained_acc": 0.95},
        "oracle": {"forget_acc": 0.7, "forget_memorised_acc": 0.2, "mia_auc": 0.5},
    }
    bands = target_bands(methods)
    assert bands["test_acc"] == (pytest.approx(0.89), None)
    assert bands["forget_acc"] == (pytest.approx(0.65), pytest.approx(0.75))
    assert bands["mia_auc"] == (pytest.approx(0.45), pytest.approx(0.55))


def test_sst2_folder_gives_subjects_and_says_where_it_came_from(tmp_path) -> None:
    rows = ["text\tlabel"] + [
        f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}" for i in range(40)
    ]
    rows += ["too short\t1"]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    records, source = load_bench_records(BenchConfig(data=str(tmp_path), sst2_rows=30))
    assert len(records) == 30
    assert all(len(r.text.split()) >= 4 for r in records)
    per_subject = {}
    for r in records:
        per_subject[r.subject_id] = per_subject.get(r.subject_id, 0) + 1
    assert len(per_subject) >= 6
    assert max(per_subject.values()) <= 5
    assert "SST-2" in source


def test_missing_sst2_folder_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="SST-2"):
        load_bench_records(BenchConfig(data=str(tmp_path / "absent")))


def _pandas_reviews(path, n: int = 60, author: bool = False) -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "review": [f"a {'fine' if i % 2 else 'poor'} film, number {i}" for i in range(n)],
            "sentiment": ["positive" if i % 2 else "negative" for i in range(n)],
        }
    )
    if author:
        frame["author"] = [f"critic-{i % 12}" for i in range(n)]
    frame.to_csv(path)


def test_a_data_file_of_ones_own_is_read_with_column_options_and_subjects(tmp_path) -> None:
    from eul.bench.data_file import DataFile
    from eul.data.readers import ColumnMap

    # given reviews as pandas exports them, with no subject column
    path = tmp_path / "reviews.csv"
    _pandas_reviews(path)
    columns = ColumnMap(text="review", label="sentiment", record_id=None, subject_id=None)
    config = BenchConfig(data=str(path), data_file=DataFile(str(path), columns), sst2_rows=50)
    # when the benchmark reads it, then the rows come in synthetic subjects of 5
    records, source = load_bench_records(config)
    assert len(records) == 50 and {r.label for r in records} == {0, 1}
    sizes = {}
    for r in records:
        sizes[r.subject_id] = sizes.get(r.subject_id, 0) + 1
    assert set(sizes.values()) == {5}
    assert "reviews.csv, 50 rows, subjects: synthetic subjects of 5 rows" == source
    # and a subject column is used as it is, unless --records-per-subject regroups
    _pandas_reviews(path, author=True)
    by_author = replace(columns, subject_id="author")
    records, source = load_bench_records(
        replace(config, data_file=DataFile(str(path), by_author), sst2_rows=None)
    )
    assert {r.subject_id for r in records} == {f"critic-{i}" for i in range(12)}
    assert source.endswith("subjects: its subject column")
    regrouped = DataFile(str(path), by_author, records_per_subject=3)
    records, _ = load_bench_records(replace(config, data_file=regrouped, sst2_rows=None))
    assert len({r.subject_id for r in records}) == 20


def test_bench_data_options_reach_the_benchmark_and_bad_ones_are_refused(tmp_path) -> None:
    import argparse

    from eul.cli.args import CliError
    from eul.cli.bench import _data_overrides

    path = tmp_path / "reviews.csv"
    _pandas_reviews(path)
    args = argparse.Namespace(
        data=str(path), task="classification", text_col="review", label_col="sentiment",
        target_col=None, id_col=None, subject_col=None, records_per_subject=4,
        memorised_share=0.25,
    )  # fmt: skip
    overrides = _data_overrides(args, "flip_share")
    assert overrides["flip_share"] == 0.25
    assert overrides["data_file"].columns.text == "review"
    assert overrides["data_file"].records_per_subject == 4
    with pytest.raises(CliError, match="must be in 0..1"):
        _data_overrides(argparse.Namespace(**{**vars(args), "memorised_share": 1.5}), "x")
    folder = argparse.Namespace(**{**vars(args), "data": str(tmp_path)})
    with pytest.raises(CliError, match="read a --data file"):
        _data_overrides(folder, "flip_share")
