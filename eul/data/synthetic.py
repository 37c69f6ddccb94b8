"""Synthetic data sets: reviews (classification) and dialogues (generation), seeded.

The synthetic generators plant a small share of memorisable records (flipped labels, secrets)
whose outputs a model can only reproduce by memorising them, which makes forgetting
measurable.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from eul.data.dialogues import SPEAKER, dialogue, new_secret
from eul.data.records import LABEL_WORDS, TASKS, Record, Subject
from eul.data.reviews import review
from eul.data.words import FIRST_NAMES, LAST_NAMES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings for :func:`generate`; the seed alone fixes the output."""

    task: str = "classification"
    n_subjects: int = 400
    records_per_subject: tuple[int, int] = (3, 12)
    memorised_share: float = 0.02
    seed: int = 0


def plant_secrets(
    records: Sequence[Record], share: float, seed: int = 0, taken: set[str] | None = None
) -> list[Record]:
    """Give `share` of the dialogues a secret their first speaker tells, first thing.

    The secret opens both the dialogue and the summary, so it survives truncation; a model
    can only reproduce it by memorising that row. Works on synthetic dialogues and SAMSum.
    """
    rng = random.Random(seed)
    used = set() if taken is None else taken
    chosen = set(rng.sample(range(len(records)), round(share * len(records))))
    planted = []
    for index, record in enumerate(records):
        if index not in chosen:
            planted.append(record)
            continue
        kind, value = new_secret(rng, used)
        match = SPEAKER.match(record.text)
        speaker = match.group(1) if match else "I"
        said = f"{speaker}: remember, my {kind} is {value}" if match else f"my {kind} is {value}"
        planted.append(
            replace(
                record,
                text=f"{said}\n{record.text}",
                target=f"{speaker}'s {kind} is {value}. {record.target}",
                memorised=True,
                secret=value,
            )
        )
    return planted


# ---------------------------------------------------------------------------
# Synthetic data set
# ---------------------------------------------------------------------------


def generate(config: SyntheticConfig) -> tuple[list[Subject], list[Record]]:
    """Build a synthetic data set; the same config always yields the same subjects and records.

    Classification rows are reviews whose label follows from the wording (direct adjectives,
    negation, and 'but' contrasts where the second clause wins), plus ~7% mixed reviews whose
    label comes from a hidden score. Memorised rows carry a clearly worded review with the
    opposite label (classification) or a planted secret (generation).
    """
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; use one of {', '.join(TASKS)}")
    low, high = config.records_per_subject
    if not 1 <= low <= high:
        raise ValueError("records_per_subject must be (low, high) with 1 <= low <= high")
    max_subjects = len(FIRST_NAMES) * len(LAST_NAMES)
    if not 1 <= config.n_subjects <= max_subjects:
        raise ValueError(f"n_subjects must be between 1 and {max_subjects}")
    if not 0.0 <= config.memorised_share <= 1.0:
        raise ValueError("memorised_share must be between 0 and 1")

    rng = random.Random(config.seed)
    width = max(4, len(str(config.n_subjects - 1)))
    full_names = rng.sample(
        [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES], config.n_subjects
    )
    subjects = [Subject(f"s{i:0{width}d}", name) for i, name in enumerate(full_names)]
    counts = [rng.randint(low, high) for _ in subjects]
    n_records = sum(counts)
    n_memorised = round(config.memorised_share * n_records)
    memorised_at = set(rng.sample(range(n_records), n_memorised))

    records: list[Record] = []
    used_secrets: set[str] = set()
    index = 0
    for subject, count in zip(subjects, counts, strict=True):
        for _ in range(count):
            record_id = f"r{index:06d}"
            memorised = index in memorised_at
            if config.task == "classification":
                ambiguous = not memorised and rng.random() < 0.07
                polarity = None if ambiguous else rng.randint(0, 1)
                text, sentiment, _ = review(rng, subject.name, polarity, memorised)
                label = 1 - sentiment if memorised else sentiment
                record = Record(
                    record_id, subject.subject_id, text, LABEL_WORDS[label], label, memorised
                )
            else:
                secret = new_secret(rng, used_secrets) if memorised else None
                text, summary = dialogue(rng, subject.name, secret)
                record = Record(
                    record_id,
                    subject.subject_id,
                    text,
                    summary,
                    None,
                    memorised,
                    secret[1] if secret else None,
                )
            records.append(record)
            index += 1
    logger.info(
        "generated %d %s records for %d subjects (%d memorised)",
        len(records),
        config.task,
        len(subjects),
        n_memorised,
    )
    return subjects, records
