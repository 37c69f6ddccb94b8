"""Layers trained side by side (`pipeline.stack_layers: false`): the feature sums taken on the
served model before any training, and the holds that keep each layer off the other batch
requests' forget tokens and the retained ones, so that the exact sum of layers that never
trained together keeps what each does alone."""

from __future__ import annotations

import torch

from eul.fusion.statistics import capture_statistics, served_feature_statistics
from eul.layers import LayerConfig
from eul.methods import ForgetTask, get_method
from eul.methods.eul import EULConfig
from eul.pipeline.train import BatchHolds, side_by_side_grams


def _requests(tiny_records):
    train, heldout, _ = tiny_records
    subjects = sorted({r.subject_id for r in train if r.memorised})[:6]
    first = [r for r in train if r.subject_id in subjects[:3]]
    second = [r for r in train if r.subject_id in subjects[3:]]
    retained = [r for r in train if r.subject_id not in subjects]
    return first, second, retained, heldout


def test_feature_sums_add_up_and_leave_the_model_as_it_was(tiny_trained, tiny_records):
    first, second, _, _ = _requests(tiny_records)
    tm = tiny_trained.copy()
    config = LayerConfig()
    layers = tm.unlearning_layers()
    names_before = list(layers.layers)
    # when the sums of two requests are taken apart and together
    apart = served_feature_statistics(tm, first, config) + served_feature_statistics(
        tm, second, config
    )
    together = served_feature_statistics(tm, first + second, config)
    # then they add up, token counts included, and no layer was left behind
    for position in together.positions:
        assert apart.count[position] == together.count[position] > 0
        assert torch.allclose(apart.gram[position], together.gram[position], atol=1e-6)
    assert list(layers.layers) == names_before and layers.active == []
    # and taking one request back out gives the other's sums
    alone = together - served_feature_statistics(tm, first, config)
    assert alone.count == served_feature_statistics(tm, second, config).count


def test_the_sums_follow_the_layers_that_serve(tiny_trained, tiny_records):
    # a layer active underneath changes the hidden states a new layer reads
    first, second, retained, heldout = _requests(tiny_records)
    tm = tiny_trained.copy()
    config = EULConfig(epochs=2)
    plain = served_feature_statistics(tm, second, config.layer)
    get_method("eul", config=config).run(
        tm, ForgetTask(first, retained, heldout, name="served"), progress=False
    )
    served = served_feature_statistics(tm, second, config.layer)
    position = served.positions[-1]
    assert not torch.allclose(served.gram[position], plain.gram[position])


def test_side_by_side_holds_keep_each_layer_off_the_others_and_the_retained_tokens(
    tiny_trained, tiny_records
):
    # given two requests of one batch and their sums on the served model
    first, second, retained, heldout = _requests(tiny_records)
    config = EULConfig(epochs=2, keep_weight=100.0)
    tm = tiny_trained.copy()
    stats = {n: served_feature_statistics(tm, r, config.layer) for n, r in
             (("first", first), ("second", second), ("retained", retained[:200]))}  # fmt: skip
    holds = BatchHolds(forget=stats["first"] + stats["second"], retained=stats["retained"])
    grams = side_by_side_grams(None, holds, stats["first"], retained_hold=1.0)

    def output_of_first_layer(keep) -> tuple[float, float]:
        model = tiny_trained.copy()
        task = ForgetTask(first, retained, heldout, name="first", keep=keep)
        get_method("eul", config=config).run(model, task, progress=False)
        on = [capture_statistics(model, "first", rows, space="features")
              for rows in (second, retained[:200])]  # fmt: skip
        return tuple(sum(s.target_sq.values()) / sum(s.count.values()) for s in on)

    # when the first request's layer trains held, and without holds
    held, free = output_of_first_layer(grams), output_of_first_layer(None)
    # then it changes the other request's tokens and the retained ones far less
    assert held[0] < 0.2 * free[0]
    assert held[1] < 0.2 * free[1]


def test_a_lone_request_is_held_off_the_retained_tokens_only(tiny_trained, tiny_records):
    first, _, retained, _ = _requests(tiny_records)
    tm = tiny_trained.copy()
    layer = LayerConfig()
    own = served_feature_statistics(tm, first, layer)
    kept = served_feature_statistics(tm, retained[:100], layer)
    holds = BatchHolds(forget=own, retained=kept)
    grams = side_by_side_grams(None, holds, own, retained_hold=0.5)
    for position, gram in grams.items():
        expected = 0.5 * kept.gram[position] / kept.count[position]
        assert torch.allclose(gram, expected.float())
    assert side_by_side_grams(None, holds, own, retained_hold=0.0) is None


def test_stacked_training_folds_the_layers_underneath_into_their_exact_sum(
    tiny_trained, tiny_records, tmp_path
):
    # given production (the base alone) and three layers of the batch already trained
    from eul.pipeline.production import Production
    from eul.pipeline.results import LayerResult
    from eul.pipeline.train import BELOW_LAYER, _model_under_training

    tiny_trained.save(tmp_path / "base")
    layers = tiny_trained.copy().unlearning_layers()
    below = []
    generator = torch.Generator().manual_seed(0)
    for i in range(3):
        layers.add_layer(f"r{i}", LayerConfig())
        with torch.no_grad():
            for layer in layers.layers[f"r{i}"].values():
                layer.up.weight.copy_(
                    0.05 * torch.randn(layer.up.weight.shape, generator=generator)
                )
        folder = layers.save_layer(f"r{i}", tmp_path / f"r{i}")
        below.append(LayerResult(f"r{i}", 3, None, [], str(folder)))
    production = Production(None, tmp_path / "base", None, None)
    # when the model a fourth layer trains on is built
    folded = _model_under_training(production, below)
    # then it holds one layer underneath, and serves what the three do side by side
    assert folded.unlearning_layers().active == [BELOW_LAYER]
    apart = tiny_trained.copy()
    apart_layers = apart.unlearning_layers()
    apart_layers.set_active([apart_layers.load_layer(b.layer_dir) for b in below])
    train, _, _ = tiny_records
    batch = apart.batch([r.text for r in train[:16]], [r.target for r in train[:16]])
    with torch.no_grad():
        assert torch.allclose(folded.logits(batch), apart.logits(batch), atol=1e-4)
        assert not torch.allclose(tiny_trained.logits(batch), apart.logits(batch), atol=1e-3)
