"""params.yaml: defaults for absent keys, clear errors for unknown or mistyped ones."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from eul.params import Params, ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_file_loads_and_states_every_knob():
    # given the params.yaml at the repository root
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # when it is loaded
    params = load_params(REPO / "params.yaml")
    # then it holds the defaults, and every key of every section is written out
    assert params == Params()
    assert raw == Params().model_dump()
    assert params.log.url == "sqlite:///state/deletion-log.sqlite"
    assert params.log.deadline_days == 30
    # training and the pipeline's updates take a GPU where there is one
    assert raw["train"]["device"] == "auto"
    assert raw["unlearn"]["device"] == "auto"


def test_absent_keys_take_defaults(tmp_path):
    # given a params file that sets one knob of one section
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 3\n")
    # when it is loaded
    params = load_params(path)
    # then that knob is set and everything else is the default
    assert params.train.epochs == 3
    assert params.train.batch_size == Params().train.batch_size
    assert params.unlearn == Params().unlearn


def test_empty_file_and_no_file_give_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params()
    assert load_params(None) == Params()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model:\n  d_modle: 64\n", "model.d_modle: unknown key"),
        ("modle:\n  d_model: 64\n", "modle: unknown key"),
        ("train:\n  epochs: ten\n", "train.epochs: Input should be a valid integer"),
        ("train:\n  epochs: '3'\n", "train.epochs"),
        ("train:\n  epochs: 0\n", "train.epochs: Input should be greater than or equal to 1"),
        ("unlearn:\n  layer:\n    activation: swish\n", "unlearn.layer.activation"),
        ("data:\n  records_per_subject: [5, 2]\n", "data.records_per_subject"),
        ("log:\n  deadline_days: 0\n", "log.deadline_days"),
        ("train:\n  device: gpu\n", "train.device: String should match pattern"),
        ("unlearn:\n  device: cuda:x\n", "unlearn.device"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("train: [\n", "not valid YAML at line"),
    ],
)
def test_bad_params_name_the_file_and_the_key(tmp_path, text, expected):
    # given a params file with one mistake
    path = tmp_path / "params.yaml"
    path.write_text(text)
    # when it is loaded, then the error is one line naming the file and the key
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match="no params file"):
        load_params(tmp_path / "nope.yaml")


def test_defaults_match_the_code_they_configure():
    # given the defaults of the classes the params feed
    from eul.layers import LayerConfig
    from eul.methods.eul import EULConfig

    # when the default params are turned into those classes
    params = Params()
    # then nothing drifts: EUL, layer, model and training defaults are the same
    assert params.eul_config() == EULConfig()
    assert params.eul_config().layer == LayerConfig()
    spec = params.model_spec()
    assert (spec.d_model, spec.num_layers, spec.num_heads, spec.d_ff, spec.vocab_size) == (
        128,
        2,
        4,
        512,
        4000,
    )
    assert asdict(params.train_config())["epochs"] == 12
    # the device says where an update runs, not what it computes: it stays out of the recipe
    on_gpu = parse_params({"train": {"device": "cuda:1"}, "unlearn": {"device": "cuda"}})
    assert on_gpu.eul_config() == EULConfig()
    assert on_gpu.train_config() == params.train_config()


def test_cli_train_defaults_equal_params_defaults():
    # given the `eul train` parser, whose defaults the train stage must reproduce
    from eul.cli.main import build_parser

    args = build_parser().parse_args(["train", "--data", "x.jsonl", "--out", "m"])
    params = Params()
    # then the base model of `dvc repro` is the model `eul train` builds by default
    assert (args.d_model, args.layers, args.heads, args.d_ff, args.vocab) == (
        params.model.d_model,
        params.model.num_layers,
        params.model.num_heads,
        params.model.d_ff,
        params.model.vocab_size,
    )
    assert (args.epochs, args.batch_size, args.lr, args.seed, args.device) == (
        params.train.epochs,
        params.train.batch_size,
        params.train.lr,
        params.train.seed,
        params.train.device,
    )


def test_parse_params_accepts_ints_for_floats():
    params = parse_params({"train": {"lr": 1}})
    assert params.train.lr == 1.0


def test_registry_defaults_match_the_tracking_settings():
    # the `registry` section and eul.stores.registry.settings.TrackingSettings name the same stores
    from eul.stores.registry.settings import TrackingSettings

    section, settings = Params().registry, TrackingSettings()
    assert (section.tracking_uri, section.model_name, section.experiment) == (
        settings.tracking_uri,
        settings.model_name,
        settings.experiment,
    )
    assert TrackingSettings(artifact_location=section.artifact_location) == settings


@pytest.mark.parametrize(
    "point", ["before-register", "after-register", "before-alias", "after-promote"]
)
def test_a_failure_drill_names_one_of_the_points(tmp_path, point):
    # given a params file that sets a failure drill at a named point
    path = tmp_path / "params.yaml"
    path.write_text(f"pipeline:\n  drill_fail_at: {point}\n")
    # then it loads, and the default (production) is no drill at all
    assert load_params(path).pipeline.drill_fail_at == point
    assert Params().pipeline.drill_fail_at is None


def test_a_failure_drill_at_an_unknown_point_is_an_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("pipeline:\n  drill_fail_at: after-lunch\n")
    with pytest.raises(ParamsError, match="drill_fail_at"):
        load_params(path)
