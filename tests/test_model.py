"""The base model: tokenizer, T5 and GPT-2 from configs, batching, training, persistence."""

from __future__ import annotations

import pytest
import torch

from eul.data import LABEL_WORDS, Record
from eul.model import IGNORE, ModelError, ModelSpec, TextModel, TrainConfig, train_full

SPEC = ModelSpec(vocab_size=300, d_model=32, num_layers=1, num_heads=2, d_ff=64)
TEXTS = ["the food was great", "the service was awful", "what a lovely film", "a dull plot"]


def _records() -> list[Record]:
    labels = [1, 0, 1, 0]
    return [
        Record(f"r{i}", f"s{i}", t, LABEL_WORDS[y], y)
        for i, (t, y) in enumerate(zip(TEXTS, labels, strict=True))
    ]


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_content_mask_excludes_padding_and_end_of_sequence(family: str) -> None:
    # given a fresh model of either family
    tm = TextModel.create(
        TEXTS + list(LABEL_WORDS), ModelSpec(**{**SPEC.__dict__, "family": family})
    )
    # when a batch with targets of different lengths is built
    batch = tm.batch(TEXTS[:2], ["positive", "negative positive"])
    # then content tokens are exactly the labelled tokens that are not EOS
    labels, content = batch["labels"], batch["content_mask"]
    assert content.sum(1).tolist()[0] < content.sum(1).tolist()[1]
    assert not content[labels == IGNORE].any()
    assert not content[labels == tm.tokenizer.eos_token_id].any()
    assert (labels == tm.tokenizer.eos_token_id).sum() == 2


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_training_lowers_the_loss_and_fits_the_labels(family: str) -> None:
    # given a fresh model and four labelled records
    tm = TextModel.create(
        TEXTS + list(LABEL_WORDS), ModelSpec(**{**SPEC.__dict__, "family": family})
    )
    records = _records()
    batch = tm.batch([r.text for r in records], [r.target for r in records])
    with torch.no_grad():
        before = tm.task_loss(batch).item()
    # when it is trained on them
    train_full(tm, records, TrainConfig(epochs=40, batch_size=4, lr=1e-2), progress=False)
    # then the loss falls and every label is predicted
    with torch.no_grad():
        after = tm.task_loss(batch).item()
    assert after < before / 4
    assert tm.choose(TEXTS, LABEL_WORDS) == [1, 0, 1, 0]


def test_save_and_load_round_trip_gives_the_same_predictions(tmp_path) -> None:
    # given a model
    tm = TextModel.create(TEXTS + list(LABEL_WORDS), SPEC)
    batch = tm.batch(TEXTS, ["positive"] * 4)
    # when it is saved and loaded again
    tm.save(tmp_path / "m")
    loaded = TextModel.load(tmp_path / "m")
    # then it scores identically and keeps its lengths
    assert torch.allclose(tm.token_logprobs(batch), loaded.token_logprobs(batch), atol=1e-6)
    assert loaded.max_input_len == tm.max_input_len


def test_generation_returns_text_for_every_input() -> None:
    tm = TextModel.create(TEXTS + list(LABEL_WORDS), SPEC)
    outputs = tm.generate(TEXTS, max_new_tokens=3)
    assert len(outputs) == len(TEXTS)
    assert all(isinstance(o, str) for o in outputs)


def test_loading_a_folder_without_a_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="config.json"):
        TextModel.load(tmp_path)


def test_copy_is_independent() -> None:
    tm = TextModel.create(TEXTS + list(LABEL_WORDS), SPEC)
    clone = tm.copy()
    with torch.no_grad():
        next(clone.model.parameters()).add_(1.0)
    assert not torch.equal(next(tm.model.parameters()), next(clone.model.parameters()))
