"""Records for the unlearning pipeline: what a record is, saving records, subject-wise splits.

Every record belongs to a subject (the person a deletion request can name), so that a request
can remove all of that person's records at once. Synthetic data sets are made in
`eul.data.synthetic`, files are read by `eul.data.readers`, public data sets are loaded by
`eul.data.public`.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

TASKS = ("classification", "generation")
LABEL_WORDS = ("negative", "positive")


@dataclass(frozen=True)
class Record:
    """One training example, owned by exactly one subject."""

    record_id: str
    subject_id: str
    text: str
    target: str
    label: int | None = None
    memorised: bool = False
    secret: str | None = None


@dataclass(frozen=True)
class Subject:
    """A person whose records can be the target of a deletion request."""

    subject_id: str
    name: str


class DataError(ValueError):
    """Bad input data; message is one line, names the problem and the fix."""


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

_RECORD_FIELDS = tuple(f.name for f in fields(Record))


def save_records(records: list[Record], path: str | Path) -> None:
    """Write records as .jsonl, .csv or .parquet (by suffix), one column per Record field."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".parquet"):
        raise DataError(
            f"cannot write {path.name}: unknown suffix {suffix!r}; use .jsonl, .csv or .parquet"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in records]
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_RECORD_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("record_id", pa.string()),
                ("subject_id", pa.string()),
                ("text", pa.string()),
                ("target", pa.string()),
                ("label", pa.int64()),
                ("memorised", pa.bool_()),
                ("secret", pa.string()),
            ]
        )
        columns = {name: [row[name] for row in rows] for name in _RECORD_FIELDS}
        pq.write_table(pa.table(columns, schema=schema), path)


# ---------------------------------------------------------------------------


def split_records(
    records: list[Record], test_share: float = 0.1, heldout_share: float = 0.1, seed: int = 0
) -> tuple[list[Record], list[Record], list[Record]]:
    """Split into (train, heldout, test) by subject, so no person leaks across splits.

    Shares are fractions of all subjects. Heldout and test subjects are drawn only from
    subjects without memorised records, so memorised rows always stay in train, where
    unlearning can be measured against them. Record order is kept within each split.
    """
    if test_share < 0 or heldout_share < 0 or test_share + heldout_share >= 1:
        raise DataError("test_share and heldout_share must be >= 0 and sum to less than 1")
    subjects = sorted({r.subject_id for r in records})
    with_memorised = {r.subject_id for r in records if r.memorised}
    eligible = [s for s in subjects if s not in with_memorised]
    n_test = round(test_share * len(subjects))
    n_heldout = round(heldout_share * len(subjects))
    if n_test + n_heldout > len(eligible):
        raise DataError(
            f"need {n_test + n_heldout} subjects without memorised rows for heldout and test "
            f"but only {len(eligible)} exist; lower the shares or the memorised share"
        )
    random.Random(seed).shuffle(eligible)
    test_subjects = set(eligible[:n_test])
    heldout_subjects = set(eligible[n_test : n_test + n_heldout])
    train = [r for r in records if r.subject_id not in test_subjects | heldout_subjects]
    heldout = [r for r in records if r.subject_id in heldout_subjects]
    test = [r for r in records if r.subject_id in test_subjects]
    return train, heldout, test


# ---------------------------------------------------------------------------
# Forget selection
# ---------------------------------------------------------------------------


def select_forget(
    records: Sequence[Record],
    subject_ids: Sequence[str] = (),
    record_ids: Sequence[str] = (),
) -> tuple[list[Record], list[Record]]:
    """Split records into (forget, retained) for a request naming subjects and/or records.

    Every named id must exist: a request for data we do not hold is a mistake to report,
    not something to ignore silently.
    """
    if not subject_ids and not record_ids:
        raise DataError("the forget set is empty: name at least one subject or record id")
    known_subjects = {r.subject_id for r in records}
    known_records = {r.record_id for r in records}
    missing = [s for s in subject_ids if s not in known_subjects]
    missing += [r for r in record_ids if r not in known_records]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{len(missing)} forget id(s) not in the data: {shown}; check them against the "
            "subject_id and record_id columns of the data file"
        )
    subjects, ids = set(subject_ids), set(record_ids)
    forget = [r for r in records if r.subject_id in subjects or r.record_id in ids]
    retained = [r for r in records if not (r.subject_id in subjects or r.record_id in ids)]
    return forget, retained
