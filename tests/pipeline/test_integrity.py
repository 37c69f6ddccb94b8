"""A layer folder is used only as it was written (done.json's sha256 of each file), and a
layer whose training diverges is refused before anything of it is saved or fused. On a
built project (real DVC), a real SQLite MLflow store and deletion log inside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eul.methods.loop import DivergedError
from eul.pipeline.batch import fuse_batch, plan_batch
from eul.pipeline.context import DONE_FILE, load_context
from eul.pipeline.files import CHECKSUMS, CorruptFileError, read_done, write_done
from eul.pipeline.intake import partition_data, snapshot_log
from eul.pipeline.production import current_production
from eul.pipeline.train import layer_folder, train_request

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")


def _subject(root: Path) -> str:
    rows = [json.loads(x) for x in (root / "data/prepared/train.jsonl").read_text().splitlines()]
    return sorted({r["subject_id"] for r in rows})[0]


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_done_json_lists_every_file_and_a_change_is_refused(tmp_path):
    folder = tmp_path / "layer"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"weights")
    (folder / "sub" / "b.json").write_text("{}")
    write_done(folder, {"request_id": "r1"})
    assert sorted(json.loads((folder / DONE_FILE).read_text())[CHECKSUMS]) == [
        "a.bin",
        "sub/b.json",
    ]
    assert read_done(folder) == {"request_id": "r1"}
    # an edited, a missing and an unreadable record are refused, each naming what to do
    _flip_a_byte(folder / "a.bin")
    with pytest.raises(CorruptFileError, match=r"a.bin does not match its sha256.*delete"):
        read_done(folder)
    (folder / "a.bin").unlink()
    with pytest.raises(CorruptFileError, match="a.bin is missing"):
        read_done(folder)
    (folder / DONE_FILE).write_text('{"request_id": ')
    with pytest.raises(CorruptFileError, match="cannot be read"):
        read_done(folder)
    # a done.json from before checksums were recorded is read as it is
    (folder / DONE_FILE).write_text('{"request_id": "r1"}')
    assert read_done(folder) == {"request_id": "r1"}


@pytest.mark.parametrize("stem", ["layer.safetensors", "feature_stats.safetensors"])
def test_a_corrupted_layer_or_statistics_file_is_refused_by_the_rerun_and_the_fusion(
    flow_project, stem
):
    # given a request whose layer was trained and saved
    ctx = load_context(flow_project)
    with ctx.ledger() as ledger:
        ledger.submit(subject_id=_subject(flow_project), request_id="req-c")
    production = current_production(ctx)
    snapshot = snapshot_log(ctx, production)
    split = partition_data(ctx, snapshot)
    trained = train_request(ctx, production, "req-c", split)
    folder = layer_folder(ctx, "req-c")
    assert stem in json.loads((folder / DONE_FILE).read_text())[CHECKSUMS]
    # when one of its files changes on disk
    _flip_a_byte(folder / stem)
    # then the rerun refuses it instead of reusing it, naming the file and the fix
    with pytest.raises(CorruptFileError, match=f"{stem} does not match"):
        train_request(ctx, production, "req-c", split)
    # and so does the fusion, before loading anything of it
    plan = plan_batch(ctx, production, ["req-c"], snapshot, "nightly")
    with pytest.raises(CorruptFileError, match=f"{stem} does not match"):
        fuse_batch(ctx, production, [trained], plan)
    assert not (ctx.workdir / "batches" / plan.folder_name / "layer").exists()


def test_a_diverging_layer_is_refused_and_nothing_of_it_is_kept(flow_project, monkeypatch):
    # given a layer whose training goes to NaN (its retained loss does, from the first step)
    from eul.methods.eul import EUL

    retained_loss = EUL._retained_loss
    monkeypatch.setattr(
        EUL, "_retained_loss", lambda *a: retained_loss(*a) * float("nan"), raising=True
    )
    ctx = load_context(flow_project)
    with ctx.ledger() as ledger:
        ledger.submit(subject_id=_subject(flow_project), request_id="req-nan")
    production = current_production(ctx)
    split = partition_data(ctx, snapshot_log(ctx, production))
    # when its layer is trained, it stops with a clear error
    with pytest.raises(DivergedError, match=r"training diverged at step \d+.*Lower unlearn.lr"):
        train_request(ctx, production, "req-nan", split)
    # then no layer is on disk to fuse, and the request is still waiting for one
    assert not (layer_folder(ctx, "req-nan") / DONE_FILE).exists()
    with ctx.ledger() as ledger:
        assert ledger.get("req-nan").state.status == "validated"
