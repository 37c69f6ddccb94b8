"""The data and model steps of dvc.yaml, configured by params.yaml.

`init_data` writes the embedded raw data set on a fresh clone (the synthetic generator is
deterministic, so the bytes match data.dvc without any DVC cache), `prepare` splits it by
subject and trains the tokenizer, `train_base` trains the base model with that tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.data.readers import load_records
from eul.data.records import LABEL_WORDS, Record, save_records
from eul.data.synthetic import SyntheticConfig, generate
from eul.params import Params

if TYPE_CHECKING:
    from eul.model.text_model import TextModel

TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "heldout", "test")


def raw_records_path(params: Params, root: str | Path = ".") -> Path:
    """The raw records file that data.dvc tracks (inside the `data.raw` folder)."""
    return Path(root) / params.data.raw / params.data.records_file


class DataInitError(ValueError):
    """The regenerated data would not be what data.dvc tracks; nothing was written."""


def init_data(params: Params, root: str | Path = ".") -> dict[str, Any]:
    """Write the raw data set and an empty log snapshot where they are missing.

    The raw rows are the synthetic data set of `params.data` minus every record id in the
    purge ledger, so a fresh clone never brings purged rows back. When data.dvc exists, the
    data is written only if its hash is the tracked one: a real data set comes from
    `dvc pull`, and synthetic rows must not take its place. Existing files are left alone.
    """
    from eul.stores.dvc import dvcstore
    from eul.stores.dvc.purge import purged_record_ids

    root = Path(root)
    raw_dir = root / params.data.raw
    records_path = raw_records_path(params, root)
    dvc_file = root / params.data.dvc_file
    result: dict[str, Any] = {"records": str(records_path), "written": False}
    if not records_path.exists():
        config = SyntheticConfig(
            task=params.data.task,
            n_subjects=params.data.n_subjects,
            records_per_subject=(
                params.data.records_per_subject[0],
                params.data.records_per_subject[1],
            ),
            memorised_share=params.data.memorised_share,
            seed=params.data.seed,
        )
        _, records = generate(config)
        purged = purged_record_ids(root / params.purge.ledger)
        kept = [r for r in records if r.record_id not in purged]
        staging = raw_dir.with_name(raw_dir.name + ".init-tmp")
        if staging.exists():
            shutil.rmtree(staging)
        save_records(kept, staging / params.data.records_file)
        if dvc_file.is_file() and not raw_dir.exists():
            tracked, made = dvcstore.tracked_md5(dvc_file), dvcstore.dir_md5(staging)
            if made != tracked:
                shutil.rmtree(staging)
                raise DataInitError(
                    f"{dvc_file.name} tracks {tracked} but params.data regenerates {made}: "
                    "the tracked data is not the embedded data set; get it with `dvc pull`"
                )
        raw_dir.mkdir(parents=True, exist_ok=True)
        os.replace(staging / params.data.records_file, records_path)
        shutil.rmtree(staging)
        result.update(written=True, rows=len(kept), purged_rows=len(records) - len(kept))
    result["snapshot"] = str(root / params.partition.snapshot)
    result["snapshot_written"] = ensure_log_snapshot(params, root)
    return result


def ensure_log_snapshot(params: Params, root: str | Path = ".") -> bool:
    """Write the snapshot of a log with no requests where there is no snapshot yet, so that
    `dvc repro` runs the `partition` stage on a project that took no request so far (its own
    data set included). The flows take the real snapshot before they partition; an existing
    one is left alone. True when it was written."""
    from eul.stores.dvc.partition import empty_snapshot

    snapshot = Path(root) / params.partition.snapshot
    if snapshot.exists():
        return False
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.write_text(json.dumps(empty_snapshot(), indent=2) + "\n", encoding="utf-8")
    return True


def _share_point(seed: int, subject_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_subject(
    records: list[Record], test_share: float, heldout_share: float, seed: int
) -> tuple[list[Record], list[Record], list[Record]]:
    """(train, heldout, test) where each subject's split follows from a hash of its id.

    `eul.data.records.split_records` shuffles the list of subjects, so deleting one subject moves
    others between splits; here a purge never moves a remaining row, and the model's
    training rows stay out of test. Subjects with memorised rows always go to train; the
    shares are those of the other subjects, met in expectation.
    """
    if test_share < 0 or heldout_share < 0 or test_share + heldout_share >= 1:
        raise ValueError("test_share and heldout_share must be >= 0 and sum to less than 1")
    with_memorised = {r.subject_id for r in records if r.memorised}
    parts: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for record in records:
        point = _share_point(seed, record.subject_id)
        if record.subject_id in with_memorised or point >= test_share + heldout_share:
            parts["train"].append(record)
        elif point < test_share:
            parts["test"].append(record)
        else:
            parts["heldout"].append(record)
    return parts["train"], parts["heldout"], parts["test"]


def _tokenizer_texts(records: list[Record]) -> list[str]:
    # The same texts `eul train` builds its tokenizer from.
    return [r.text for r in records] + [r.target for r in records] + list(LABEL_WORDS)


def prepare(params: Params, root: str | Path = ".") -> dict[str, int]:
    """Split the raw records by subject and train the tokenizer on the train split; write an
    empty log snapshot where there is none (`ensure_log_snapshot`), for `partition`."""
    from eul.model.tokenizer import train_tokenizer

    root = Path(root)
    ensure_log_snapshot(params, root)
    records = load_records(raw_records_path(params, root), task=params.data.task)
    split = split_by_subject(
        records, params.prepare.test_share, params.prepare.heldout_share, params.prepare.seed
    )
    out = root / params.prepare.out
    out.mkdir(parents=True, exist_ok=True)
    for name, part in zip(SPLITS, split, strict=True):
        save_records(part, out / f"{name}.jsonl")
    tokenizer = train_tokenizer(_tokenizer_texts(split[0]), params.model.vocab_size)
    tokenizer.save_pretrained(out / TOKENIZER_DIR)
    return {name: len(part) for name, part in zip(SPLITS, split, strict=True)}


def starting_model(params: Params, root: Path, tokenizer: Callable[[], Any]) -> TextModel:
    """What the base recipe trains: the checkpoint in `train.init` (its own tokenizer, the
    lengths from `model`), else a fresh model built from `model` with `tokenizer()`."""
    from eul.model.text_model import ModelError, TextModel, build_model

    spec = params.model_spec()
    if params.train.init:
        path = root / params.train.init
        if not (path / "config.json").is_file():
            raise ModelError(
                f"train.init is {params.train.init!r} but {path} has no config.json: point it "
                "at a Hugging Face checkpoint folder (or set it to null to build a small T5)"
            )
        tm = TextModel.load(path)
        tm.max_input_len, tm.max_target_len = spec.max_input_len, spec.max_target_len
        return tm
    built = tokenizer()
    return TextModel(build_model(built, spec), built, spec.max_input_len, spec.max_target_len)


def train_base(params: Params, root: str | Path = ".", progress: bool = False) -> dict[str, Any]:
    """Train the base model on the prepared train split with the prepared tokenizer, on
    `train.device`; the saved files are written from the CPU."""
    import torch
    from transformers import AutoTokenizer

    from eul.model.device import resolve_device
    from eul.model.training import seed_everything, train_full

    device = resolve_device(params.train.device)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    root = Path(root)
    prepared = root / params.prepare.out
    records = load_records(prepared / "train.jsonl", task=params.data.task)
    config = params.train_config()
    seed_everything(config.seed)

    def prepared_tokenizer() -> Any:
        return AutoTokenizer.from_pretrained(prepared / TOKENIZER_DIR)

    tm = starting_model(params, root, prepared_tokenizer).to(device)
    stats = train_full(tm, records, config, desc="train base model", progress=progress)
    tm.save(root / params.train.out)
    n_params = sum(p.numel() for p in tm.model.parameters())
    return {"records": len(records), "parameters": n_params, "final_loss": stats["final_loss"]}
