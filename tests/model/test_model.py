"""The base model: tokenizer, T5 and GPT-2 from configs, batching, training, persistence."""

from __future__ import annotations

import pytest
import torch

from eul.data.records import LABEL_WORDS, Record
from eul.model.device import resolve_device
from eul.model.text_model import IGNORE, ModelError, ModelSpec, TextModel
from eul.model.training import TrainConfig, train_full

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


# -- devices ------------------------------------------------------------------------------
# The meta device stands in for an accelerator: its tensors have a device and no data, so
# where each tensor lands can be checked on a machine without a GPU.


def _no_accelerator(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_is_the_cpu_on_a_machine_without_an_accelerator(monkeypatch) -> None:
    _no_accelerator(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_a_device_the_machine_lacks_is_a_one_line_error_naming_the_fix(
    monkeypatch, name: str
) -> None:
    # given a machine without a GPU
    _no_accelerator(monkeypatch)
    # when a GPU is asked for, then the error says so in one line and names what to use
    with pytest.raises(ValueError, match="is not available") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)
    assert "--device cpu or auto" in str(err.value)
    assert "params.yaml" in str(err.value)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda0", "tpu", ""])
def test_an_unknown_device_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown device .*use auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)


def test_a_model_moved_to_the_cpu_scores_as_before(monkeypatch) -> None:
    # given a trained model and its scores
    tm = TextModel.create(TEXTS + list(LABEL_WORDS), SPEC)
    records = _records()
    train_full(tm, records, TrainConfig(epochs=5, batch_size=4, lr=1e-2), progress=False)
    before = tm.score(records)
    # when it is moved to the CPU by name ("auto" is the CPU here) and back
    _no_accelerator(monkeypatch)
    assert tm.to("auto") is tm
    assert tm.to("cpu").device == torch.device("cpu")
    # then every score, choice and output is the same, and returned as Python values
    assert tm.score(records) == before
    assert tm.copy().score(records) == before
    assert tm.copy().device == tm.device
    assert tm.choose(TEXTS, LABEL_WORDS) == tm.copy().choose(TEXTS, LABEL_WORDS)
    assert all(isinstance(v, float) for row in before for v in row)


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_every_batch_lands_on_the_models_device(family: str) -> None:
    # given a model moved to another device (meta here)
    tm = TextModel.create(
        TEXTS + list(LABEL_WORDS), ModelSpec(**{**SPEC.__dict__, "family": family})
    )
    tm.to(torch.device("meta"))
    assert tm.device.type == "meta"
    # when batches are built every way the methods build them
    built = [tm.batch(TEXTS, ["positive"] * 4), *tm.record_batches(_records(), 3)]
    if family == "t5":
        built.append(tm.batch_from_ids([[5, 6, 1], [7, 1]], [[8, 1], [9, 9, 1]]))
    # then every tensor is on the model's device
    for batch in built:
        assert {tensor.device.type for tensor in batch.values()} == {"meta"}


def test_layers_hosted_before_a_move_go_with_the_model() -> None:
    # given a model hosting a layer
    tm = TextModel.create(TEXTS + list(LABEL_WORDS), SPEC)
    layers = tm.unlearning_layers()
    layers.add_layer("before")
    # when the model moves, then the layer moves with it
    tm.to(torch.device("meta"))
    assert {p.device.type for p in layers.layers["before"].parameters()} == {"meta"}
