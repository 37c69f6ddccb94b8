"""Unlearning methods on the tiny model, held against a really retrained oracle."""

from __future__ import annotations

import pytest
import torch

from eul.evaluate.metrics import EvalSets, evaluate
from eul.methods import METHODS, EULConfig, ForgetTask, get_method
from eul.model.training import TrainConfig

TINY_TRAIN = TrainConfig(epochs=15, batch_size=32, lr=3e-3)


@pytest.fixture(scope="module")
def forget_task(tiny_records) -> tuple[ForgetTask, EvalSets]:
    """Forget the subjects that own memorised rows: 10 subjects, flipped labels among them."""
    train, heldout, test = tiny_records
    subjects = sorted({r.subject_id for r in train if r.memorised})[:10]
    forget = [r for r in train if r.subject_id in subjects]
    retained = [r for r in train if r.subject_id not in subjects]
    task = ForgetTask(forget=forget, retained=retained, heldout=heldout, name="req")
    return task, EvalSets(test=test, retained=retained, forget=forget, unseen=heldout)


@pytest.fixture(scope="module")
def oracle_metrics(tiny_trained, forget_task) -> tuple[dict, list[float]]:
    task, sets = forget_task
    oracle = get_method("retrain", train=TINY_TRAIN).run(tiny_trained, task, progress=False)
    return evaluate(oracle.model, sets)


def test_registry_holds_every_method() -> None:
    assert {"eul", "retrain", "finetune", "reverse_gradient"} <= set(METHODS)
    with pytest.raises(KeyError, match="unknown method"):
        get_method("nope")


def test_empty_forget_set_is_refused() -> None:
    with pytest.raises(ValueError, match="forget set is empty"):
        ForgetTask(forget=[], retained=[])


def test_oracle_never_saw_the_flipped_labels(tiny_trained, forget_task, oracle_metrics) -> None:
    _, sets = forget_task
    original, _ = evaluate(tiny_trained, sets)
    oracle, _ = oracle_metrics
    assert original["forget_memorised_acc"] == 1.0
    assert oracle["forget_memorised_acc"] < 0.7


def test_eul_moves_a_memorised_forget_set_toward_the_oracle(
    tiny_model, tiny_trained, forget_task, oracle_metrics
) -> None:
    # given the original model, which reproduces every flipped label, and the oracle
    task, sets = forget_task
    original, _ = evaluate(tiny_trained, sets)
    oracle, _ = oracle_metrics
    # when EUL unlearns the forget set
    result = get_method("eul").run(tiny_model, task, progress=False)
    unlearned, _ = evaluate(result.model, sets)

    # then memorised accuracy and MIA AUC end clearly closer to the oracle's
    def gap(metrics: dict, key: str) -> float:
        return abs(metrics[key] - oracle[key])

    # (by at least 0.2: two or more of the 12 flipped rows; the MIA AUC's gap at least halved)
    assert gap(unlearned, "forget_memorised_acc") < gap(original, "forget_memorised_acc") - 0.2
    assert gap(unlearned, "mia_auc") < gap(original, "mia_auc") / 2
    # and the model keeps doing its task on retained data
    assert unlearned["retained_acc"] > original["retained_acc"] - 0.05
    assert result.trainable_share < 0.1


def test_eul_leaves_the_base_weights_untouched(tiny_model, forget_task) -> None:
    task, _ = forget_task
    before = {k: v.clone() for k, v in tiny_model.model.state_dict().items()}
    get_method("eul", config=EULConfig(epochs=1)).run(tiny_model, task, progress=False)
    after = tiny_model.model.state_dict()
    assert all((before[k] == after[k]).all() for k in before)


def test_eul_is_reproducible_with_a_seed(tiny_trained, forget_task) -> None:
    task, sets = forget_task
    runs = []
    for _ in range(2):
        result = get_method("eul", config=EULConfig(epochs=2)).run(
            tiny_trained.copy(), task, progress=False
        )
        runs.append(result.model.score(sets.forget))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("objective", ["paper", "npo", "task_only"])
def test_every_objective_runs_and_trains_only_the_layer(tiny_model, forget_task, objective) -> None:
    task, _ = forget_task
    config = EULConfig(objective=objective, epochs=1, reference="none")
    result = get_method("eul", config=config).run(tiny_model, task, progress=False)
    assert len(result.history) == 1
    assert result.layer_name == "req"


@pytest.mark.parametrize("name", ["finetune", "reverse_gradient"])
def test_baselines_change_the_model(tiny_model, forget_task, name) -> None:
    task, sets = forget_task
    before = tiny_model.score(sets.forget)
    options = {"train": TrainConfig(epochs=1)} if name == "finetune" else {"steps": 5}
    result = get_method(name, **options).run(tiny_model, task, progress=False)
    assert result.model.score(sets.forget) != before
    assert result.trainable_share == 1.0


# Short runs of each registered method (one without options here runs with its defaults).
SHORT_RUNS = {
    "eul": {"config": EULConfig(epochs=1)},
    "retrain": {"train": TrainConfig(epochs=1)},
    "finetune": {"train": TrainConfig(epochs=1)},
    "reverse_gradient": {"steps": 5},
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_leaves_the_callers_weights_unchanged(tiny_model, forget_task, name) -> None:
    # given the caller's model and a copy of its weights
    task, _ = forget_task
    before = {k: v.clone() for k, v in tiny_model.model.state_dict().items()}
    # when a method unlearns the request from it
    result = get_method(name, **SHORT_RUNS.get(name, {})).run(tiny_model, task, progress=False)
    # then the caller's weights are as they were, and a method that trains weights did so on
    # a model of its own
    after = tiny_model.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    if METHODS[name].copies_model:
        assert result.model is not tiny_model


def test_the_forget_level_drops_to_what_unseen_rows_get_when_that_is_below_one_half(
    tiny_records,
) -> None:
    # given an untrained model, unsure of every target token (as on long free-text targets)
    import math

    from conftest import TINY_SPEC

    from eul.model.text_model import TextModel

    train, heldout, _ = tiny_records
    unsure = TextModel.create([r.text for r in train], TINY_SPEC, seed=1)
    method = get_method("eul")
    # when the level is measured on held-out rows
    method._unseen_level = method._measure_unseen_level(unsure, heldout)
    # then it is the median held-out token log-probability, far below log 0.5
    assert method._unseen_level < math.log(0.5) - 1.0
    assert method.level == method._unseen_level
    # and without the gate there is no level at all
    assert get_method("eul", reference="none").level == -math.inf


def test_keeping_earlier_requests_holds_a_new_layer_off_their_tokens(tiny_trained, forget_task):
    # given a first request forgotten by a shared-basis layer, and its feature statistics
    from eul.fusion.statistics import capture_statistics, keep_grams

    task, _ = forget_task
    subjects = sorted({r.subject_id for r in task.forget})
    first = [r for r in task.forget if r.subject_id in subjects[:5]]
    second = [r for r in task.forget if r.subject_id in subjects[5:]]
    config = EULConfig(epochs=2, keep_weight=100.0)

    def second_layer_output_on_first(keep: bool) -> float:
        tm = tiny_trained.copy()
        get_method("eul", config=config).run(
            tm, ForgetTask(first, task.retained, task.heldout, name="first"), progress=False
        )
        earlier = capture_statistics(tm, "first", first, space="features")
        # when a second request's layer trains on top, with or without keeping the first
        task2 = ForgetTask(
            second, task.retained, task.heldout, "second", keep_grams(earlier) if keep else None
        )
        get_method("eul", config=config).run(tm, task2, progress=False)
        on_first = capture_statistics(tm, "second", first, space="features")
        return sum(on_first.target_sq.values()) / sum(on_first.count.values())

    # then kept, the second layer changes the first request's hidden states far less
    assert second_layer_output_on_first(True) < 0.2 * second_layer_output_on_first(False)


def test_eul_on_an_explicit_cpu_device_gives_the_same_layer_and_scores(
    tiny_trained, forget_task
) -> None:
    # given the same request run with no device named and with the CPU named
    task, sets = forget_task
    config = EULConfig(epochs=2)
    plain = get_method("eul", config=config).run(tiny_trained.copy(), task, progress=False)
    placed_model = tiny_trained.copy().to("cpu")
    placed = get_method("eul", config=config).run(placed_model, task, progress=False)
    # then training and its result are the same to the last bit
    assert placed.history == plain.history
    assert placed.model.score(sets.forget) == plain.model.score(sets.forget)
    plain_layer = plain.model.unlearning_layers().layers["req"].state_dict()
    placed_layer = placed.model.unlearning_layers().layers["req"].state_dict()
    assert all(torch.equal(plain_layer[k], placed_layer[k]) for k in plain_layer)


def test_the_keep_penalty_is_computed_where_the_layer_is() -> None:
    # given a model on another device (meta: a device without data) with a fresh layer
    from conftest import TINY_SPEC

    from eul.data.records import LABEL_WORDS
    from eul.methods.eul import EUL
    from eul.model.text_model import TextModel

    tm = TextModel.create(list(LABEL_WORDS), TINY_SPEC).to(torch.device("meta"))
    layers = tm.unlearning_layers()
    layers.add_layer("new")
    width = layers.configs["new"].width
    keep = {p: torch.eye(width + 1, device="meta") for p in layers.position_names}
    # when the penalty is computed, then it is a scalar on that device
    penalty = EUL._keep_penalty(layers, "new", keep)
    assert penalty.device.type == "meta" and penalty.shape == ()
