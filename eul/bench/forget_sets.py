"""Forget sets of the benchmarks: whole subjects drawn at random, some of their labels
flipped so that only memorising reproduces them."""

from __future__ import annotations

import random
from dataclasses import replace

from eul.data.records import LABEL_WORDS, DataError, Record


def choose_forget(
    train: list[Record], share: float, flip_share: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Pick whole subjects until `share` of the rows; flip the labels of `flip_share` of them.

    Returns the new training list (with the flipped rows in it) and the forget set.
    """
    new_train, requests = choose_requests(train, 1, share, flip_share, seed)
    return new_train, requests[0]


def choose_requests(
    train: list[Record], n: int, share: float, flip_share: float, seed: int
) -> tuple[list[Record], list[list[Record]]]:
    """n disjoint forget sets of whole subjects, each about `share` of the rows, with the
    labels of `flip_share` of each set's rows flipped (so only memorising reproduces them).

    Returns the new training list (with the flipped rows in it) and the forget sets.
    """
    rng = random.Random(seed)
    groups = subject_groups(train, n, share, rng)
    requests = [flip_labels(chosen, flip_share, rng) for chosen in groups]
    new_train = without_subjects(train, [r for forget in requests for r in forget])
    return new_train, requests


def flip_labels(chosen: list[Record], flip_share: float, rng: random.Random) -> list[Record]:
    """`chosen` with the labels of round(flip_share * len(chosen)) of its rows, drawn by `rng`,
    flipped and marked memorised: answers that only memorising reproduces."""
    n_labels = len(LABEL_WORDS)
    flipped = set(rng.sample([r.record_id for r in chosen], round(flip_share * len(chosen))))
    forget = []
    for r in chosen:
        if r.record_id in flipped:
            label = (r.label + 1) % n_labels
            r = replace(r, label=label, target=LABEL_WORDS[label], memorised=True)
        forget.append(r)
    return forget


def subject_groups(
    train: list[Record], n: int, share: float, rng: random.Random
) -> list[list[Record]]:
    """n disjoint sets of whole subjects (their ordinary rows), each about `share` of rows."""
    by_subject: dict[str, list[Record]] = {}
    for record in train:
        by_subject.setdefault(record.subject_id, []).append(record)
    subjects = sorted(by_subject)
    rng.shuffle(subjects)
    wanted = max(1, round(share * len(train)))
    remaining = iter(subjects)
    groups: list[list[Record]] = []
    for _ in range(n):
        chosen: list[Record] = []
        for subject in remaining:
            if len(chosen) >= wanted:
                break
            chosen.extend(r for r in by_subject[subject] if not r.memorised)
        if not chosen:
            raise DataError(f"not enough subjects for {n} forget sets of {share:.1%} each")
        groups.append(chosen)
    return groups


def without_subjects(train: list[Record], replaced: list[Record]) -> list[Record]:
    """The training rows, with the chosen subjects' rows replaced by their altered versions
    and their other rows (those left out of the forget sets) dropped."""
    by_id = {r.record_id: r for r in replaced}
    subjects = {r.subject_id for r in replaced}
    return [
        by_id.get(r.record_id, r)
        for r in train
        if r.subject_id not in subjects or r.record_id in by_id
    ]
