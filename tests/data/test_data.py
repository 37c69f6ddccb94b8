"""Tests for eul.data: synthetic generation, file round-trips, loaders and subject splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from eul.data.public import load_samsum, load_sst2
from eul.data.readers import ColumnMap, load_records
from eul.data.records import LABEL_WORDS, DataError, Record, save_records, split_records
from eul.data.synthetic import SyntheticConfig, generate

# The public data sets, next to the repository (../shared/data); their tests skip without them.
REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
SST2_DIR = SHARED_DATA / "sst2"
SAMSUM_CSV = SHARED_DATA / "samsum" / "val.csv"

SMALL_CLS = SyntheticConfig(task="classification", n_subjects=60, memorised_share=0.05, seed=1)
SMALL_GEN = SyntheticConfig(task="generation", n_subjects=40, memorised_share=0.1, seed=2)


@pytest.fixture(scope="module")
def cls_data() -> tuple[list, list[Record]]:
    return generate(SMALL_CLS)


@pytest.fixture(scope="module")
def gen_data() -> tuple[list, list[Record]]:
    return generate(SMALL_GEN)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --- generate -------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "generation"])
def test_generate_is_deterministic_by_seed(task: str) -> None:
    # given two configs that differ only in seed
    config = SyntheticConfig(task=task, n_subjects=30, seed=7)
    other = SyntheticConfig(task=task, n_subjects=30, seed=8)
    # when generating twice with the same seed and once with another
    first, second, third = generate(config), generate(config), generate(other)
    # then the same seed gives identical output and a different seed does not
    assert first == second
    assert first != third


def test_generate_ids_are_unique_and_well_formed(cls_data) -> None:
    # given a generated data set
    subjects, records = cls_data
    # then subject and record ids are unique, zero-padded and consistent
    assert len({s.subject_id for s in subjects}) == len(subjects) == SMALL_CLS.n_subjects
    assert len({s.name for s in subjects}) == len(subjects)
    assert len({r.record_id for r in records}) == len(records)
    assert records[0].record_id == "r000000"
    assert subjects[0].subject_id == "s0000"
    assert {r.subject_id for r in records} == {s.subject_id for s in subjects}


def test_generate_records_per_subject_in_range(cls_data) -> None:
    # given a generated data set
    _, records = cls_data
    # then every subject owns a number of records within the configured range
    low, high = SMALL_CLS.records_per_subject
    assert all(low <= n <= high for n in Counter(r.subject_id for r in records).values())


def test_classification_labels_targets_and_lengths(cls_data) -> None:
    # given a generated classification data set
    _, records = cls_data
    labels = [r.label for r in records]
    # then labels are balanced, targets are the label words and texts are 8-40 words
    assert 0.3 <= sum(labels) / len(labels) <= 0.7
    assert all(r.target == LABEL_WORDS[r.label] for r in records)
    assert all(8 <= len(r.text.split()) <= 40 for r in records)
    assert all(r.secret is None for r in records)


def test_classification_memorised_rows_have_flipped_labels(cls_data) -> None:
    # given a generated classification data set with memorised rows
    _, records = cls_data
    memorised = [r for r in records if r.memorised]
    # then their count matches the share and their label contradicts the rating in the text
    assert len(memorised) == round(SMALL_CLS.memorised_share * len(records))
    for record in memorised:
        rating = _rating_polarity(record.text)
        assert rating is not None
        assert record.label == 1 - rating


def _rating_polarity(text: str) -> int | None:
    """Polarity of the numeric rating that memorised reviews always carry."""
    for token in text.replace("/", " ").split():
        if token.isdigit() and 1 <= int(token) <= 10:
            score = int(token)
            is_stars = "star" in text
            return int(score >= 4) if is_stars else int(score >= 7)
    return None


def test_generation_secrets_appear_in_dialogue_and_summary(gen_data) -> None:
    # given a generated generation data set
    subjects, records = gen_data
    names = {s.subject_id: s.name.split()[0] for s in subjects}
    memorised = [r for r in records if r.memorised]
    # then each memorised row has a unique secret spoken by its subject and kept in the summary
    assert len(memorised) == round(SMALL_GEN.memorised_share * len(records)) > 0
    assert len({r.secret for r in memorised}) == len(memorised)
    for record in memorised:
        speaker = names[record.subject_id]
        assert any(
            line.startswith(f"{speaker}:") and record.secret in line
            for line in record.text.splitlines()
        )
        assert record.secret in record.target
    assert all(r.secret is None and r.label is None for r in records if not r.memorised)


def test_generation_dialogues_include_subject(gen_data) -> None:
    # given a generated generation data set
    subjects, records = gen_data
    names = {s.subject_id: s.name.split()[0] for s in subjects}
    # then every dialogue has 2-6 lines, one spoken by the subject, and a short summary
    for record in records:
        lines = record.text.splitlines()
        assert 2 <= len(lines) <= 6
        assert any(line.startswith(f"{names[record.subject_id]}:") for line in lines)
        assert len(record.text.split()) <= 80
        assert record.target.endswith(".")


def test_generate_rejects_unknown_task() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        generate(SyntheticConfig(task="translation"))


# --- save / load ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
@pytest.mark.parametrize("which", ["cls", "gen"])
def test_save_load_round_trip(tmp_path: Path, suffix: str, which: str, cls_data, gen_data) -> None:
    # given generated records plus one with quotes, a newline and a zero-padded secret
    task, records = (
        ("classification", cls_data[1]) if which == "cls" else ("generation", gen_data[1])
    )
    tricky = Record(
        "r999999",
        "s9999",
        'said "hi", then\nleft',
        records[0].target,
        records[0].label,
        True,
        "0042",
    )
    records = records[:40] + [r for r in records if r.memorised] + [tricky]
    path = tmp_path / f"records{suffix}"
    # when saving and loading them back
    save_records(records, path)
    loaded = load_records(path, task=task)
    # then the records are identical, including None and bool fields
    assert loaded == records


def test_save_records_rejects_unknown_suffix(tmp_path: Path, cls_data) -> None:
    with pytest.raises(DataError, match="unknown suffix"):
        save_records(cls_data[1][:2], tmp_path / "records.xlsx")


def test_load_assigns_ids_when_absent(tmp_path: Path) -> None:
    # given a file with only text and label columns
    path = write_jsonl(tmp_path / "plain.jsonl", [{"text": "good", "label": 1}] * 3)
    # when loading it
    records = load_records(path)
    # then ids are assigned by position and every record is its own subject
    assert [r.record_id for r in records] == ["r000000", "r000001", "r000002"]
    assert [r.subject_id for r in records] == ["s000000", "s000001", "s000002"]
    assert not any(r.memorised for r in records)


def test_load_accepts_label_words_and_custom_columns(tmp_path: Path) -> None:
    # given a csv with differently named columns and word labels
    path = tmp_path / "custom.csv"
    path.write_text("id,review,sentiment\n7,nice,positive\n8,bad,Negative\n", encoding="utf-8")
    columns = ColumnMap(text="review", label="sentiment", record_id="id", subject_id=None)
    # when loading with a column map
    records = load_records(path, columns=columns)
    # then labels map to indices and ids come from the mapped column
    assert [(r.record_id, r.label, r.target) for r in records] == [
        ("7", 1, "positive"),
        ("8", 0, "negative"),
    ]


def test_load_tsv_with_more_classes(tmp_path: Path) -> None:
    # given a tab-separated file with three classes
    path = tmp_path / "three.tsv"
    path.write_text("text\tlabel\na\t0\nb\t2\n", encoding="utf-8")
    # when loading with three label words
    records = load_records(path, label_words=("bad", "okay", "good"))
    # then the third class is accepted
    assert [r.target for r in records] == ["bad", "good"]


def test_load_generation_with_mapped_target(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gen.jsonl", [{"dialogue": "A: hi\nB: hey", "summary": "Hi."}])
    records = load_records(path, "generation", ColumnMap(text="dialogue", target="summary"))
    assert records[0].target == "Hi." and records[0].label is None


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("missing.jsonl", None, {}, "does not exist"),
        ("data.txt", "text,label\na,1\n", {}, "unknown suffix"),
        ("empty.jsonl", "", {}, "empty"),
        ("header.csv", "text,label\n", {}, "no records"),
        ("cols.jsonl", '{"body": "a", "label": 1}\n', {}, "its columns are 'body', 'label'"),
        ("ragged.csv", 'text,label\n"a, b",1,extra\n', {}, "line 2: 3 cells for the header's 2"),
        ("latin.csv", b"text,label\ncaf\xe9,1\n", {}, "not UTF-8 text .byte 0xe9"),
        ("line.jsonl", '{"text": "a", "label": 1}\n{oops\n', {}, "line 2: not valid JSON"),
        ("list.jsonl", "[1, 2]\n", {}, "record 0 is not an object"),
        ("number.jsonl", '{"text": 5, "label": 1}\n', {}, "'text' holds int, not text"),
        ("columns.json", '{"text": ["a", "b"], "label": [1]}', {}, "different lengths"),
        ("bad.jsonl", '{"text": "a", "label": 5}\n', {}, "label 5 is not valid"),
        ("word.jsonl", '{"text": "a", "label": "meh"}\n', {}, "label 'meh' is not valid"),
        ("blank.jsonl", '{"text": "  ", "label": 1}\n', {}, "text is empty"),
        ("nogen.jsonl", '{"text": "a", "target": ""}\n', {"task": "generation"}, "target"),
        ("task.jsonl", '{"text": "a", "label": 1}\n', {"task": "qa"}, "unknown task"),
    ],
)
def test_load_records_errors(
    tmp_path: Path, name: str, content: str | bytes | None, kwargs: dict, message: str
) -> None:
    # given a bad input file
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    # when loading it, then a one-line DataError names the problem
    with pytest.raises(DataError, match=message) as caught:
        load_records(path, **kwargs)
    assert "\n" not in str(caught.value)


def test_a_review_file_exported_by_pandas_reads_as_it_is(tmp_path: Path) -> None:
    import pandas as pd

    # given reviews as pandas writes them: an unnamed index column first, label words, a
    # cell holding markup, quotes, a comma and a newline, and a repeated column name
    text = 'A film with <br /><br />markup, "quotes"\nand a second line.'
    frame = pd.DataFrame({"review": [text, "Dull."], "sentiment": ["positive", "negative"]})
    path = tmp_path / "reviews.csv"
    frame.to_csv(path)
    assert path.read_text().startswith(",review,sentiment")
    columns = ColumnMap(text="review", label="sentiment", record_id=None, subject_id=None)
    # when it is read with the column options, then every row comes back whole
    records = load_records(path, columns=columns)
    assert [(r.text, r.label) for r in records] == [(text, 1), ("Dull.", 0)]
    # and the unnamed index column has pandas' name, usable as the record id
    indexed = ColumnMap(text="review", label="sentiment", record_id="Unnamed: 0", subject_id=None)
    by_index = load_records(path, columns=indexed)
    assert [r.record_id for r in by_index] == ["0", "1"]
    # and a repeated column is told apart as pandas does
    (tmp_path / "twice.csv").write_text("text,label,text\nfirst,1,second\n")
    twice = load_records(tmp_path / "twice.csv", columns=ColumnMap(text="text.1", subject_id=None))
    assert twice[0].text == "second"


def test_json_lists_columns_and_lines_read_alike(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 1, "record_id": 7}, {"text": "b", "label": "negative"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "columns.json").write_text(json.dumps({"text": ["a", "b"], "label": [1, 0],
                                                       "record_id": [7, None]}))  # fmt: skip
    (tmp_path / "lines.json").write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    for name in ("list.json", "columns.json", "lines.json"):
        records = load_records(tmp_path / name)
        # a field missing from a row is empty: that row gets an id of its own
        assert [(r.record_id, r.text, r.label) for r in records] == [
            ("7", "a", 1), ("r000001", "b", 0)], name  # fmt: skip


# --- split_records ----------------------------------------------------------------------------


def test_split_keeps_subjects_whole_and_memorised_in_train(cls_data) -> None:
    # given records with memorised rows
    _, records = cls_data
    # when splitting by subject
    train, heldout, test = split_records(records, test_share=0.1, heldout_share=0.1, seed=3)
    # then no subject spans two splits, nothing is lost, and memorised rows stay in train
    subjects = [{r.subject_id for r in part} for part in (train, heldout, test)]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert sorted(train + heldout + test, key=lambda r: r.record_id) == records
    assert len(subjects[1]) == len(subjects[2]) == round(0.1 * SMALL_CLS.n_subjects)
    assert not any(r.memorised for r in heldout + test)
    assert sum(r.memorised for r in train) == sum(r.memorised for r in records)


def test_split_is_deterministic(cls_data) -> None:
    _, records = cls_data
    assert split_records(records, seed=4) == split_records(records, seed=4)
    assert split_records(records, seed=4) != split_records(records, seed=5)


def test_split_rejects_impossible_shares(cls_data) -> None:
    _, records = cls_data
    with pytest.raises(DataError):
        split_records(records, test_share=0.6, heldout_share=0.5)


# --- real data sets (optional) ----------------------------------------------------------------


@pytest.mark.skipif(not SST2_DIR.is_dir(), reason=f"SST-2 not available: no {SST2_DIR}")
def test_load_sst2_groups_subjects() -> None:
    records = load_sst2(SST2_DIR, limit=50, seed=0, records_per_subject=5)
    assert len(records) == 50
    assert set(Counter(r.subject_id for r in records).values()) == {5}
    assert all(r.target == LABEL_WORDS[r.label] for r in records)


@pytest.mark.skipif(not SAMSUM_CSV.is_file(), reason=f"SAMSum not available: no {SAMSUM_CSV}")
def test_load_samsum_uses_first_speaker() -> None:
    records = load_samsum(SAMSUM_CSV, limit=20)
    assert len(records) == 20
    assert all(r.text.startswith(f"{r.subject_id}:") for r in records)


def test_real_loaders_report_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_sst2(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_samsum(tmp_path / "val.csv")


def test_reading_a_file_leaves_no_copy_in_the_datasets_cache_or_temp(tmp_path):
    """Records are personal data: a read must not leave an Arrow copy anywhere (the datasets
    library caches every file it reads unless told otherwise)."""
    secret = "a sentence only this test writes, about seven quiet zebras"
    data = tmp_path / "data"
    data.mkdir()
    path = data / "records.jsonl"
    save_records([Record("r1", "s1", secret, "positive", 1)], path)
    (data / "records.csv").write_text(f'record_id,subject_id,text,label\nr2,s2,"{secret}",1\n')
    cache, temp, home = tmp_path / "cache", tmp_path / "tmp", tmp_path / "hf"
    for folder in (cache, temp, home):
        folder.mkdir()
    code = (
        "import sys; from eul.data.readers import load_records; "
        "[print(len(load_records(p))) for p in sys.argv[1:]]"
    )
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HOME": str(home), "TMPDIR": str(temp)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(data / "records.csv")],
        env=env, capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    assert out.stdout.split() == ["1", "1"]
    leftovers = [p for top in (cache, temp, home) for p in top.rglob("*") if p.is_file()]
    assert [p for p in leftovers if secret.encode() in p.read_bytes()] == []
    assert list(temp.iterdir()) == []
