"""The documented steps for a data set of one's own (docs/bring-your-own.md), followed on a
fresh clone: the file at data/raw/records.jsonl, `dvc add data/raw`, `dvc repro`."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest
import yaml
from conftest import FLOW_PARAMS, REPO, make_dvc_project

pytestmark = pytest.mark.slow

WORDS = {1: ["moving", "sharp", "warm", "funny"], 0: ["dull", "clumsy", "flat", "tired"]}


def _own_rows(n_subjects: int = 40, per_subject: int = 4) -> list[dict]:
    rng = random.Random(7)
    rows = []
    for s in range(n_subjects):
        for k in range(per_subject):
            label = rng.randrange(2)
            text = f"the {rng.choice(['film', 'show', 'book'])} felt {rng.choice(WORDS[label])}"
            rows.append({"record_id": f"own-{s:03d}-{k}", "subject_id": f"reviewer-{s:03d}",
                         "text": text, "label": label})  # fmt: skip
    return rows


def test_a_data_set_of_ones_own_runs_through_dvc_repro_on_a_fresh_clone(tmp_path, tool_env):
    # given a fresh clone: the tracked files only (data.dvc names the embedded data set,
    # which is not there), with the tiny settings
    root = make_dvc_project(tmp_path / "clone")
    for name in ("eul", "tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "prefect.yaml", ".gitignore", "data.dvc"):
        shutil.copy(REPO / name, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in FLOW_PARAMS.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # when the user puts a data set at data/raw/records.jsonl and follows the steps
    rows = _own_rows()
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for step in (["dvc", "add", "data/raw"], ["dvc", "repro"]):
        done = subprocess.run(step, cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(step)}: {done.stdout[-800:]}{done.stderr[-800:]}"
    # then every stage ran on those rows: split, a base model, and a partition with no
    # request yet (an empty log snapshot written where there was none)
    prepared = [
        json.loads(line)
        for name in ("train", "heldout", "test")
        for line in (root / f"data/prepared/{name}.jsonl").read_text().splitlines()
    ]
    assert sorted(r["record_id"] for r in prepared) == sorted(r["record_id"] for r in rows)
    assert (root / "models/base/config.json").is_file()
    assert json.loads((root / "state/log-snapshot.json").read_text())["requests"] == []
    retained = (root / "data/partition/retained.jsonl").read_text().splitlines()
    assert len(retained) == len((root / "data/prepared/train.jsonl").read_text().splitlines())
    # and data.dvc now tracks the user's data, not the embedded set
    assert (
        yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
        != yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]["md5"]
    )
