"""Unlearning layers: identity at start, positions per family, switching, persistence."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from eul.data.records import LABEL_WORDS
from eul.layers import LayerConfig, UnlearningLayer, UnlearningModel
from eul.model.text_model import ModelSpec, TextModel

SPEC = ModelSpec(vocab_size=300, d_model=32, num_layers=2, num_heads=2, d_ff=64)
TEXTS = ["the food was great", "the service was awful"]


def _model(family: str = "t5") -> TextModel:
    return TextModel.create(
        TEXTS + list(LABEL_WORDS), ModelSpec(**{**SPEC.__dict__, "family": family})
    )


def _nudge(layers: UnlearningModel, name: str) -> None:
    with torch.no_grad():
        for p in layers.layer_parameters(name):
            p.add_(0.5)


@pytest.mark.parametrize(("family", "positions"), [("t5", 4), ("gpt2", 2)])
def test_a_fresh_layer_leaves_the_model_unchanged(family: str, positions: int) -> None:
    # given a model and its scores
    tm = _model(family)
    batch = tm.batch(TEXTS, ["positive", "negative"])
    before = tm.token_logprobs(batch)
    # when a fresh layer is added and switched on
    layers = tm.unlearning_layers()
    layers.add_layer("r1")
    layers.set_active(["r1"])
    # then one layer sits at every block and the output is unchanged (zero-initialised up)
    assert len(layers.position_names) == positions
    assert torch.allclose(before, tm.token_logprobs(batch))


def test_an_active_layer_changes_the_output_and_disabling_restores_the_teacher() -> None:
    tm = _model()
    batch = tm.batch(TEXTS, ["positive", "negative"])
    before = tm.token_logprobs(batch)
    layers = tm.unlearning_layers()
    layers.add_layer("r1")
    layers.set_active(["r1"])
    _nudge(layers, "r1")
    changed = tm.token_logprobs(batch)
    with layers.disabled():
        teacher = tm.token_logprobs(batch)
    assert not torch.allclose(before, changed)
    assert torch.allclose(before, teacher)
    assert layers.active == ["r1"]


def test_disabling_one_named_layer_keeps_the_others() -> None:
    tm = _model()
    layers = tm.unlearning_layers()
    layers.add_layer("a")
    layers.add_layer("b")
    layers.set_active(["a", "b"])
    with layers.disabled("b"):
        assert layers.active == ["a"]
    assert layers.active == ["a", "b"]


def test_base_weights_are_frozen_and_only_the_layer_trains() -> None:
    tm = _model()
    layers = tm.unlearning_layers()
    layers.add_layer("r1")
    assert not any(
        p.requires_grad for p in tm.model.parameters() if p not in set(layers.parameters())
    )
    assert all(p.requires_grad for p in layers.layer_parameters("r1"))


def test_save_and_load_a_layer_alone(tmp_path) -> None:
    # given a trained-looking layer
    tm = _model()
    layers = tm.unlearning_layers()
    layers.add_layer("r1", LayerConfig(width=8))
    layers.set_active(["r1"])
    _nudge(layers, "r1")
    batch = tm.batch(TEXTS, ["positive", "negative"])
    expected = tm.token_logprobs(batch)
    folder = layers.save_layer("r1", tmp_path / "r1")
    # when it is loaded onto a fresh copy of the same base model
    other = TextModel(type(tm.model)(tm.model.config), tm.tokenizer)
    other.model.load_state_dict(
        {k: v for k, v in tm.model.state_dict().items() if not k.startswith("layers.")}
    )
    other_layers = other.unlearning_layers()
    name = other_layers.load_layer(folder)
    other_layers.set_active([name])
    # then it reproduces the outputs, and the files hold only the layer
    assert name == "r1"
    assert torch.allclose(expected, other.token_logprobs(batch), atol=1e-6)
    assert sorted(p.name for p in folder.iterdir()) == [
        "layer.safetensors",
        "layer_config.json",
        "layer_meta.json",
    ]


def test_loading_a_layer_for_another_model_is_refused(tmp_path) -> None:
    tm = _model()
    tm.unlearning_layers().add_layer("r1")
    folder = tm.unlearning_layers().save_layer("r1", tmp_path / "r1")
    other = TextModel.create(TEXTS, ModelSpec(**{**SPEC.__dict__, "d_model": 48}))
    with pytest.raises(ValueError, match="another model"):
        other.unlearning_layers().load_layer(folder)


def test_width_32_is_near_half_a_percent_of_a_t5_base_sized_model() -> None:
    # given a t5-base-sized configuration, built without allocating its weights
    config = T5Config(d_model=768, d_ff=3072, num_layers=12, num_heads=12, vocab_size=32128)
    with torch.device("meta"):
        base = T5ForConditionalGeneration(config)
        layers = UnlearningModel(base)
        layers.add_layer("trained", LayerConfig(width=32, basis="trained"))
        layers.add_layer("shared", LayerConfig(width=32, basis="shared"))
    # then a trained-basis layer trains close to the paper's 0.5% of the parameters
    assert 0.004 < layers.parameter_share("trained") < 0.006
    # and a shared-basis layer of the same width trains only its up projection, about half
    assert 0.002 < layers.parameter_share("shared") < 0.003


def test_unknown_model_type_is_refused() -> None:
    class Fake(torch.nn.Module):
        config = type("C", (), {"model_type": "bert"})()

    with pytest.raises(ValueError, match="no unlearning layer positions"):
        UnlearningModel(Fake())


def test_llama_style_decoders_get_a_layer_after_every_block() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    base = LlamaForCausalLM(config)
    ids = torch.randint(0, 100, (2, 7))
    before = base(input_ids=ids).logits
    layers = UnlearningModel(base)
    layers.add_layer("r1")
    layers.set_active(["r1"])
    assert layers.position_names == ["decoder_0", "decoder_1", "decoder_2"]
    assert torch.allclose(before, base(input_ids=ids).logits, atol=1e-6)
    _nudge(layers, "r1")
    assert not torch.allclose(before, base(input_ids=ids).logits, atol=1e-4)


def test_layers_added_after_a_move_are_created_on_the_models_device() -> None:
    # given a model moved to another device (meta: a device without data, like a GPU here)
    tm = _model()
    tm.to(torch.device("meta"))
    layers = tm.unlearning_layers()
    # when layers of either basis are added
    layers.add_layer("shared", LayerConfig(basis="shared"))
    layers.add_layer("trained", LayerConfig(basis="trained"))
    # then every weight sits where the model is
    for name in ("shared", "trained"):
        assert {p.device.type for p in layers.layers[name].parameters()} == {"meta"}


def test_the_shared_basis_is_drawn_on_the_cpu_from_its_seed() -> None:
    # the same seed and position give the same basis, whatever device the layer goes to
    config = LayerConfig(width=8, basis_seed=3)
    layer = UnlearningLayer(16, config, position_index=2)
    generator = torch.Generator().manual_seed(3 * 10_007 + 2)
    expected = torch.randn(8, 16, generator=generator) / 16**0.5
    assert torch.equal(layer.down.weight, expected)
