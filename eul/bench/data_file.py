"""A benchmark's records from a file of one's own (`eul bench --data FILE`): any .csv, .tsv,
.jsonl, .json or .parquet file, read with the same column options as the other commands."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from eul.data.public import synthetic_subjects
from eul.data.readers import ColumnMap, load_records
from eul.data.records import Record

# Rows per synthetic subject when the file names none (as SST-2 is read).
DEFAULT_RECORDS_PER_SUBJECT = 5


@dataclass(frozen=True)
class DataFile:
    """Where the records are and how to read them. `records_per_subject`: group the rows
    into synthetic subjects of this many (None: the file's subject column, or groups of
    `DEFAULT_RECORDS_PER_SUBJECT` where it has none)."""

    path: str
    columns: ColumnMap | None = None
    records_per_subject: int | None = None


def is_data_file(data: str | None) -> bool:
    return data is not None and Path(data).is_file()


def load_data_file(
    data: DataFile, task: str, seed: int, limit: int | None = None
) -> tuple[list[Record], str]:
    """(records, where they came from): shuffled by `seed`, the first `limit` kept."""
    records = load_records(data.path, task=task, columns=data.columns)
    # load_records names a row without a subject id after its position
    named = any(r.subject_id != f"s{i:06d}" for i, r in enumerate(records))
    random.Random(seed).shuffle(records)
    if limit is not None:
        records = records[:limit]
    per_subject = data.records_per_subject
    if per_subject is None and not named:
        per_subject = DEFAULT_RECORDS_PER_SUBJECT
    if per_subject is not None:
        records = synthetic_subjects(records, per_subject)
    subjects = f"synthetic subjects of {per_subject} rows" if per_subject else "its subject column"
    return records, f"{Path(data.path).name}, {len(records)} rows, subjects: {subjects}"
