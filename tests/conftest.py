"""Shared fixtures: a tiny data set and a tiny T5 that really trains, in seconds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from eul.data import LABEL_WORDS, Record, SyntheticConfig, generate, split_records  # noqa: E402
from eul.model import ModelSpec, TextModel, TrainConfig, train_full  # noqa: E402

# One thread: multi-threaded CPU kernels may sum in a different order from run to run, and
# a tiny model trained for hundreds of steps turns that into different results.
torch.set_num_threads(1)

TINY_SPEC = ModelSpec(vocab_size=800, d_model=64, num_layers=2, num_heads=4, d_ff=256)


@pytest.fixture(scope="session")
def tiny_records() -> tuple[list[Record], list[Record], list[Record]]:
    """(train, heldout, test) of a small synthetic review set."""
    _, records = generate(SyntheticConfig(n_subjects=90, memorised_share=0.04, seed=3))
    return split_records(records, seed=3)


@pytest.fixture(scope="session")
def tiny_trained(tiny_records) -> TextModel:
    """A tiny T5 trained long enough to memorise its flipped labels. Do not modify it."""
    train, _, _ = tiny_records
    tm = TextModel.create([r.text for r in train] + list(LABEL_WORDS), TINY_SPEC, seed=0)
    train_full(tm, train, TrainConfig(epochs=15, batch_size=32, lr=3e-3), progress=False)
    return tm


@pytest.fixture
def tiny_model(tiny_trained: TextModel) -> TextModel:
    """A private copy of the trained tiny model, free to modify."""
    return tiny_trained.copy()
