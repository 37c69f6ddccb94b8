"""Public data sets as records: GLUE SST-2 (classification) and SAMSum (summarisation)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from eul.data.dialogues import SPEAKER
from eul.data.readers import ColumnMap, csv_header, load_records
from eul.data.records import DataError, Record


def load_sst2(
    folder: Path, limit: int | None = None, seed: int = 0, records_per_subject: int = 5
) -> list[Record]:
    """Load GLUE SST-2 ``train.tsv`` with synthetic subjects.

    SST-2 has no authors, so after a seeded shuffle consecutive groups of
    ``records_per_subject`` sentences are treated as one subject's records.
    """
    folder = Path(folder)
    path = folder / "train.tsv"
    if not path.is_file():
        raise DataError(f"SST-2 file {path} not found; download GLUE SST-2 into {folder}")
    if records_per_subject < 1:
        raise DataError("records_per_subject must be at least 1")
    header = csv_header(path, "\t")
    text_column = "sentence" if "sentence" in header else "text"
    records = load_records(
        path, "classification", ColumnMap(text=text_column, record_id=None, subject_id=None)
    )
    random.Random(seed).shuffle(records)
    if limit is not None:
        records = records[:limit]
    return synthetic_subjects(
        [replace(r, text=r.text.strip()) for r in records], records_per_subject
    )


def synthetic_subjects(records: list[Record], records_per_subject: int) -> list[Record]:
    """Consecutive groups of `records_per_subject` records as one subject each (`s0000`,
    `s0001`...), for data sets without authors: shuffle first for random groups."""
    if records_per_subject < 1:
        raise DataError("records_per_subject must be at least 1")
    width = max(4, len(str(max(len(records) - 1, 0) // records_per_subject)))
    return [
        replace(r, subject_id=f"s{i // records_per_subject:0{width}d}")
        for i, r in enumerate(records)
    ]


def load_samsum(path: Path, limit: int | None = None) -> list[Record]:
    """Load a SAMSum csv (columns id, summary, dialogue) for summarisation.

    The subject is the first speaker of each dialogue, the person most likely to ask for their
    chats to be forgotten; dialogues without a 'Name:' prefix become their own subject.
    Line endings are normalised to '\\n' and surrounding whitespace is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SAMSum file {path} not found; download SAMSum and pass its csv path")
    records = load_records(
        path,
        "generation",
        ColumnMap(text="dialogue", target="summary", label=None, record_id="id", subject_id=None),
    )
    if limit is not None:
        records = records[:limit]
    result = []
    for record in records:
        match = SPEAKER.match(record.text)
        subject_id = match.group(1) if match else f"s-{record.record_id}"
        text = record.text.replace("\r\n", "\n").strip()
        result.append(
            replace(record, subject_id=subject_id, text=text, target=record.target.strip())
        )
    return result


# ---------------------------------------------------------------------------
# Splits
