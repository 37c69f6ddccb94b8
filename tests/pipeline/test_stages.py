"""The data steps of dvc.yaml: the raw data on a fresh clone, and a split that purges
cannot reshuffle."""

from __future__ import annotations

import json

import pytest

from eul.data.readers import load_records
from eul.data.synthetic import SyntheticConfig, generate
from eul.params import parse_params
from eul.pipeline.stages import DataInitError, init_data, raw_records_path, split_by_subject
from eul.stores.dvc.partition import parse_snapshot


def test_split_keeps_subjects_together_and_memorised_rows_in_train():
    # given a data set with memorised rows
    _, records = generate(SyntheticConfig(n_subjects=200, memorised_share=0.05, seed=1))
    # when it is split
    train, heldout, test = split_by_subject(records, 0.1, 0.1, seed=0)
    # then no subject is in two splits, every memorised row is in train, and shares are near
    subjects = [{r.subject_id for r in part} for part in (train, heldout, test)]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    memorised = {r.record_id for r in records if r.memorised}
    assert memorised and memorised <= {r.record_id for r in train}
    assert 0.03 < len(subjects[2]) / 200 < 0.2 and 0.03 < len(subjects[1]) / 200 < 0.2


def test_removing_a_subject_moves_no_other_row_between_splits():
    # given a split, and the same data without two subjects (a purge)
    _, records = generate(SyntheticConfig(n_subjects=120, seed=2))
    gone = {records[0].subject_id, records[-1].subject_id}
    before = split_by_subject(records, 0.1, 0.1, seed=0)
    after = split_by_subject([r for r in records if r.subject_id not in gone], 0.1, 0.1, seed=0)
    # then every remaining row is in the split it was in
    for part_before, part_after in zip(before, after, strict=True):
        assert [r for r in part_before if r.subject_id not in gone] == part_after


def test_init_data_writes_raw_data_without_purged_rows_and_an_empty_snapshot(tmp_path):
    # given small data params and a ledger that purged two records
    params = parse_params({"data": {"n_subjects": 10}})
    ledger = tmp_path / params.purge.ledger
    ledger.parent.mkdir(parents=True)
    ledger.write_text(json.dumps({"requests": [{"record_ids": ["r000001", "r000004"]}]}) + "\n")
    # when the raw data is initialised
    result = init_data(params, tmp_path)
    # then it is the generated data minus the purged records
    _, records = generate(SyntheticConfig(n_subjects=10))
    written = load_records(raw_records_path(params, tmp_path))
    assert [r.record_id for r in written] == [
        r.record_id for r in records if r.record_id not in {"r000001", "r000004"}
    ]
    assert result["purged_rows"] == 2
    # and an empty snapshot lets the partition stage run
    snapshot = parse_snapshot(json.loads((tmp_path / params.partition.snapshot).read_text()))
    assert snapshot.requests == ()
    # when it is run again, then existing files are left alone
    raw = raw_records_path(params, tmp_path)
    raw.write_text(raw.read_text()[:200])
    assert init_data(params, tmp_path)["written"] is False
    assert len(raw.read_text()) == 200


def test_init_data_refuses_to_stand_in_for_other_tracked_data(tmp_path):
    # given a data.dvc that tracks some other data set
    params = parse_params({"data": {"n_subjects": 10}})
    (tmp_path / "data.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data/raw\n"
    )
    # when the embedded data would be regenerated, then nothing is written
    with pytest.raises(DataInitError, match="dvc pull"):
        init_data(params, tmp_path)
    assert not (tmp_path / params.data.raw).exists()
    assert not list(tmp_path.glob("data/*"))


def test_the_train_stage_fine_tunes_a_checkpoint_named_in_train_init(tmp_path, tiny_trained):
    # given a Hugging Face checkpoint folder and a prepared training split
    from eul.data.records import save_records
    from eul.model.text_model import TextModel
    from eul.pipeline.stages import train_base

    tiny_trained.save(tmp_path / "checkpoint")
    train = generate(SyntheticConfig(n_subjects=20, seed=3))[1][:40]
    values = {
        "prepare": {"out": "prepared"},
        "train": {"init": "checkpoint", "epochs": 1, "out": "models/base"},
        "model": {"max_input_len": 48, "max_target_len": 6},
    }
    save_records(train, tmp_path / "prepared/train.jsonl")
    # when the train stage runs (no tokenizer was prepared: the checkpoint brings its own)
    stats = train_base(parse_params(values), tmp_path)
    # then the base is the checkpoint, fine-tuned: same vocabulary, new weights, our lengths
    base = TextModel.load(tmp_path / "models/base")
    assert base.tokenizer.get_vocab() == tiny_trained.tokenizer.get_vocab()
    assert stats["records"] == len(train)
    before = tiny_trained.model.state_dict()
    after = base.model.state_dict()
    assert any(not (before[k] == after[k]).all() for k in before)
    assert (base.max_input_len, base.max_target_len) == (48, 6)


def test_a_train_init_without_a_checkpoint_names_the_fix(tmp_path):
    from eul.data.records import save_records
    from eul.model.text_model import ModelError
    from eul.pipeline.stages import train_base

    save_records(generate(SyntheticConfig(n_subjects=5))[1][:5], tmp_path / "prepared/train.jsonl")
    values = {"prepare": {"out": "prepared"}, "train": {"init": "nowhere"}}
    with pytest.raises(ModelError, match="Hugging Face checkpoint folder"):
        train_base(parse_params(values), tmp_path)
