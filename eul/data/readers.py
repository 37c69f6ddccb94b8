"""Reading records from .csv, .tsv, .jsonl, .json or .parquet files (`load_records`)."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eul.data.records import LABEL_WORDS, TASKS, DataError, Record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnMap:
    """Which file columns hold which record fields, so external data sets load unchanged."""

    text: str = "text"
    target: str | None = None
    label: str | None = "label"
    record_id: str | None = "record_id"
    subject_id: str | None = "subject_id"


_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def column_names(header: Sequence[str]) -> list[str]:
    """A header row's names as pandas gives them, so that files it exported read back: an
    empty name (an unnamed index column) becomes ``Unnamed: <position>``, and a repeated
    name ``name.1``, ``name.2``..."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(header):
        name = raw if raw.strip() else f"Unnamed: {position}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        names.append(name)
    return names


def csv_header(path: Path, delimiter: str) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return column_names(next(csv.reader(f, delimiter=delimiter), []))


def _read_columns(path: Path) -> dict[str, list[Any]]:
    """Read a file into plain column lists, in memory only: csv cells come back as strings
    (codes like '0937' keep their leading zeros) and empty cells as None.

    Plain readers, no library cache: the datasets library writes an Arrow copy of every file
    it reads and never removes it, and records are personal data that a purge must be able to
    remove."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return _read_csv(path, "\t" if suffix == ".tsv" else ",")
        if suffix == ".parquet":
            return _read_parquet(path)
        return _read_json(path, lines=suffix == ".jsonl")
    except DataError:
        raise
    except UnicodeDecodeError as error:
        raise DataError(
            f"could not read {path}: it is not UTF-8 text (byte {error.object[error.start]:#04x} "
            f"at offset {error.start}); save it as UTF-8"
        ) from error
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DataError(
            f"could not read {path}: {type(error).__name__}: {reason}; check the file format"
        ) from error


def _read_csv(path: Path, delimiter: str) -> dict[str, list[Any]]:
    """A csv or tsv file: quoted cells may hold the delimiter and newlines; blank lines are
    skipped; a short row gets empty cells; a row with more non-empty cells than the header
    has names is an error naming its line."""
    csv.field_size_limit(2**31 - 1)  # a long review or dialogue is one cell
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        names = column_names(next(reader, []))
        if not names:
            raise DataError(f"{path} is empty; add a header row and at least one record")
        columns: dict[str, list[Any]] = {name: [] for name in names}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(names) and any(cell for cell in row[len(names) :]):
                raise DataError(
                    f"{path.name} line {reader.line_num}: {len(row)} cells for the header's "
                    f"{len(names)} columns; quote cells that hold {delimiter!r}"
                )
            row = row[: len(names)] + [""] * (len(names) - len(row))
            for name, cell in zip(names, row, strict=True):
                columns[name].append(cell if cell != "" else None)
    return columns


def _read_json(path: Path, lines: bool) -> dict[str, list[Any]]:
    """JSON lines (one object a line), or a .json file holding a list of objects, an object
    of equal-length columns, or JSON lines."""
    text = path.read_text(encoding="utf-8-sig")
    rows: list[Any] | None = None
    if not lines:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None  # JSON lines in a .json file
        if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
            if len({len(v) for v in value.values()}) > 1:
                raise DataError(f"{path.name}: its columns have different lengths")
            return {str(k): list(v) for k, v in value.items()}
        if isinstance(value, list):
            rows = value
    if rows is None:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataError(
                        f"{path.name} line {number}: not valid JSON ({error.msg}); one object a "
                        f"line"
                    ) from error
    columns: dict[str, list[Any]] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path.name}: record {index} is not an object of named fields")
        for name in row:
            columns.setdefault(str(name), [None] * index)
        for name, values in columns.items():
            values.append(row.get(name))
    return columns


def _read_parquet(path: Path) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


def _parse_label(value: Any, label_words: Sequence[str], row: int) -> int:
    """Accept an int class index, an integral float, a digit string or a label word."""
    parsed: int | None = None
    if isinstance(value, bool) or value is None:
        parsed = None
    elif isinstance(value, int):
        parsed = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        parsed = int(value)
    elif isinstance(value, str):
        token = value.strip()
        if token in label_words:
            parsed = label_words.index(token)
        elif token.lower() in [w.lower() for w in label_words]:
            parsed = [w.lower() for w in label_words].index(token.lower())
        elif re.fullmatch(r"-?\d+", token):
            parsed = int(token)
    if parsed is None or not 0 <= parsed < len(label_words):
        raise DataError(
            f"row {row}: label {value!r} is not valid; use an int in 0..{len(label_words) - 1} "
            f"or one of {', '.join(label_words)}"
        )
    return parsed


def _parse_bool(value: Any, row: int) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", ""):
        return value.strip().lower() in ("true", "1")
    raise DataError(f"row {row}: memorised value {value!r} is not valid; use true or false")


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def load_records(
    path: str | Path,
    task: str = "classification",
    columns: ColumnMap | None = None,
    label_words: tuple[str, ...] = LABEL_WORDS,
) -> list[Record]:
    """Load records from .csv, .tsv, .jsonl, .json or .parquet.

    ``columns`` defaults to the layout written by :func:`eul.data.records.save_records` (for
    generation the target comes from the ``target`` column). Without a record id column,
    records get ids ``r{index:06d}`` in file order; without a subject id column, every record
    is its own subject ``s{index:06d}``, so a deletion request can only name single records.
    Optional ``memorised`` and ``secret`` columns are passed through.
    """
    columns = _column_map(task, columns, label_words)
    path = _checked_file(Path(path))
    data = _read_columns(path)
    n_rows = _check_columns(data, path, task, columns)
    records = [_record_at(data, i, task, columns, label_words) for i in range(n_rows)]
    logger.info("loaded %d %s records from %s", len(records), task, path)
    return records


def _column_map(task: str, columns: ColumnMap | None, label_words: tuple[str, ...]) -> ColumnMap:
    """The columns to read for `task` (the default layout when none are given), checked."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if columns is None:
        columns = (
            ColumnMap() if task == "classification" else ColumnMap(target="target", label=None)
        )
    if task == "classification" and columns.label is None:
        raise DataError("classification needs a label column; set ColumnMap(label=...)")
    if task == "generation" and columns.target is None:
        raise DataError("generation needs a target column; set ColumnMap(target=...)")
    if not label_words:
        raise DataError("label_words is empty; pass at least one label word")
    return columns


def _checked_file(path: Path) -> Path:
    """`path`, once it is known to be a non-empty file of a readable kind."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(
            f"cannot read {path.name}: unknown suffix {suffix!r}; use {', '.join(_SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; add at least one record")
    return path


def _check_columns(data: dict[str, list[Any]], path: Path, task: str, columns: ColumnMap) -> int:
    """The number of rows, once the text and label (or target) columns are known present."""
    available = list(data)
    required = [columns.text]
    required.append(columns.label if task == "classification" else columns.target)
    for name in required:
        if name not in data:
            raise DataError(
                f"column {name!r} not found in {path.name}; its columns are "
                f"{', '.join(map(repr, available))}; name the right one (--text-col, "
                f"--label-col, --target-col)"
            )
    n_rows = len(data[columns.text])
    if n_rows == 0:
        raise DataError(f"{path} has no records; add at least one row")
    return n_rows


def _record_at(
    data: dict[str, list[Any]],
    i: int,
    task: str,
    columns: ColumnMap,
    label_words: tuple[str, ...],
) -> Record:
    """Row `i` as a record; a row without text (or target) is a DataError naming the row."""
    text = data[columns.text][i]
    if text is not None and not isinstance(text, str):
        raise DataError(f"row {i}: column {columns.text!r} holds {type(text).__name__}, not text")
    if text is None or not text.strip():
        raise DataError(f"row {i}: text is empty; remove the row or fill column {columns.text!r}")
    if task == "classification":
        label: int | None = _parse_label(data[columns.label][i], label_words, i)
        target = label_words[label]
    else:
        label = None
        target = data[columns.target][i]
        if not isinstance(target, str) or not target.strip():
            raise DataError(
                f"row {i}: target is empty; remove the row or fill column {columns.target!r}"
            )
    record_ids = data.get(columns.record_id) if columns.record_id else None
    subject_ids = data.get(columns.subject_id) if columns.subject_id else None
    memorised_col = data.get("memorised")
    secret_col = data.get("secret")
    record_id = _optional_str(record_ids[i]) if record_ids is not None else None
    subject_id = _optional_str(subject_ids[i]) if subject_ids is not None else None
    return Record(
        record_id=record_id or f"r{i:06d}",
        subject_id=subject_id or f"s{i:06d}",
        text=text,
        target=target,
        label=label,
        memorised=_parse_bool(memorised_col[i], i) if memorised_col is not None else False,
        secret=_optional_str(secret_col[i]) if secret_col is not None else None,
    )
