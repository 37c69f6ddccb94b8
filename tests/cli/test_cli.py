"""The command line: help, one-line errors with exit 2, and the core loop end to end."""

from __future__ import annotations

import json

import pytest

from eul.cli.main import build_parser, main


@pytest.mark.parametrize(
    "argv", [[], ["data", "generate"], ["train"], ["unlearn"], ["evaluate"], ["bench"]]
)
def test_every_command_has_help(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: eul" in capsys.readouterr().out


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert err.startswith("eul: error: ")
    return err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A generated data set and a briefly trained tiny model on disk."""
    root = tmp_path_factory.mktemp("cli")
    assert (
        main(["--quiet", "data", "generate", "--out", str(root / "data"), "--subjects", "40"]) == 0
    )
    assert (
        main(
            [
                "--quiet",
                "train",
                "--data",
                str(root / "data" / "train.jsonl"),
                "--out",
                str(root / "model"),
                "--d-model",
                "32",
                "--layers",
                "1",
                "--heads",
                "2",
                "--d-ff",
                "64",
                "--vocab",
                "400",
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    return root


def test_missing_data_file_is_one_line(capsys, workspace) -> None:
    err = _one_line_error(capsys, ["train", "--data", "nope.jsonl", "--out", str(workspace / "x")])
    assert "nope.jsonl" in err


def test_unknown_column_is_one_line(capsys, workspace) -> None:
    err = _one_line_error(
        capsys,
        [
            "train",
            "--data",
            str(workspace / "data" / "train.jsonl"),
            "--out",
            str(workspace / "x"),
            "--text-col",
            "body",
        ],
    )
    assert "body" in err


def test_empty_forget_set_is_one_line(capsys, workspace) -> None:
    err = _one_line_error(
        capsys,
        [
            "unlearn",
            "--model",
            str(workspace / "model"),
            "--data",
            str(workspace / "data" / "train.jsonl"),
            "--out",
            str(workspace / "layer"),
        ],
    )
    assert "empty" in err


def test_forget_ids_not_in_the_data_are_one_line(capsys, workspace) -> None:
    err = _one_line_error(
        capsys,
        [
            "unlearn",
            "--model",
            str(workspace / "model"),
            "--data",
            str(workspace / "data" / "train.jsonl"),
            "--out",
            str(workspace / "layer"),
            "--record",
            "r999999",
        ],
    )
    assert "r999999" in err


def test_missing_model_is_one_line(capsys, workspace) -> None:
    err = _one_line_error(
        capsys,
        [
            "unlearn",
            "--model",
            str(workspace / "nomodel"),
            "--data",
            str(workspace / "data" / "train.jsonl"),
            "--out",
            str(workspace / "layer"),
            "--subject",
            "s0001",
        ],
    )
    assert "nomodel is not there" in err and "eul train" in err


def test_bench_without_the_sst2_folder_says_so(capsys) -> None:
    err = _one_line_error(capsys, ["bench", "--data", "/nonexistent/sst2"])
    assert "SST-2 folder" in err and "file of records" in err


def test_unlearn_then_evaluate_with_the_layer(capsys, workspace) -> None:
    # given a trained model and a subject with records in the training data
    data = str(workspace / "data" / "train.jsonl")
    subject = json.loads((workspace / "data" / "train.jsonl").read_text().splitlines()[0])[
        "subject_id"
    ]
    # when one request is unlearned and the result evaluated
    assert (
        main(
            [
                "--quiet",
                "unlearn",
                "--model",
                str(workspace / "model"),
                "--data",
                data,
                "--heldout",
                str(workspace / "data" / "heldout.jsonl"),
                "--subject",
                subject,
                "--out",
                str(workspace / "layers" / "req-1"),
                "--epochs",
                "1",
                "--reference",
                "probe",
            ]
        )
        == 0
    )
    layer_dir = workspace / "layers" / "req-1"
    assert (layer_dir / "layer.safetensors").is_file()
    assert json.loads((layer_dir / "training.json").read_text())["reference"] == "probe"
    # and the sums that fusing it needs lie beside the weights, in both spaces
    from eul.fusion.statistics import FEATURE_STATS, FusionStats

    features = FusionStats.load(layer_dir, stem=FEATURE_STATS)
    hidden = FusionStats.load(layer_dir)
    assert features.d_in == 64 and hidden.d_in == hidden.d_model
    assert all(count > 0 for count in features.count.values())
    out = workspace / "metrics.json"
    assert (
        main(
            [
                "--quiet",
                "evaluate",
                "--model",
                str(workspace / "model"),
                "--layer",
                str(workspace / "layers" / "req-1"),
                "--data",
                data,
                "--test",
                str(workspace / "data" / "test.jsonl"),
                "--subject",
                subject,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    # then the metrics are printed and written, and no forget text appears in them
    metrics = json.loads(out.read_text())
    assert {"test_acc", "forget_acc", "mia_auc"} <= set(metrics)
    printed = capsys.readouterr().out
    assert "mia_auc" in printed
    first_text = json.loads((workspace / "data" / "train.jsonl").read_text().splitlines()[0])[
        "text"
    ]
    assert first_text not in out.read_text() + printed


def test_generation_data_trains_unlearns_and_reports_rouge(tmp_path) -> None:
    # given a small dialogue-summary data set with planted secrets
    data = tmp_path / "data"
    assert (
        main(
            [
                "--quiet",
                "data",
                "generate",
                "--task",
                "generation",
                "--out",
                str(data),
                "--subjects",
                "30",
                "--memorised-share",
                "0.1",
            ]
        )
        == 0
    )
    train = str(data / "train.jsonl")
    subject = next(
        json.loads(line)["subject_id"]
        for line in (data / "train.jsonl").read_text().splitlines()
        if json.loads(line)["memorised"]
    )
    # when a model is trained, a request unlearned and the result evaluated
    common = ["--task", "generation"]
    assert (
        main(
            [
                "--quiet",
                "train",
                "--data",
                train,
                "--out",
                str(tmp_path / "m"),
                "--d-model",
                "32",
                "--layers",
                "1",
                "--heads",
                "2",
                "--d-ff",
                "64",
                "--vocab",
                "500",
                "--epochs",
                "2",
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "--quiet",
                "unlearn",
                "--model",
                str(tmp_path / "m"),
                "--data",
                train,
                "--subject",
                subject,
                "--out",
                str(tmp_path / "l"),
                "--epochs",
                "1",
                *common,
            ]
        )
        == 0
    )
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "--quiet",
                "evaluate",
                "--model",
                str(tmp_path / "m"),
                "--layer",
                str(tmp_path / "l"),
                "--data",
                train,
                "--test",
                str(data / "test.jsonl"),
                "--subject",
                subject,
                "--out",
                str(out),
                *common,
            ]
        )
        == 0
    )
    # then ROUGE and the secret extraction rate are reported
    metrics = json.loads(out.read_text())
    assert {"test_rouge1", "test_rouge2", "test_rougeL", "forget_rougeL"} <= set(metrics)
    assert 0.0 <= metrics["forget_memorised_acc"] <= 1.0


def test_a_plain_hugging_face_checkpoint_folder_goes_through_every_step(
    tmp_path, workspace
) -> None:
    # given a seq2seq checkpoint written by Hugging Face itself (no eul files in the folder)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folder = tmp_path / "hf-t5"
    AutoModelForSeq2SeqLM.from_pretrained(workspace / "model").save_pretrained(folder)
    AutoTokenizer.from_pretrained(workspace / "model").save_pretrained(folder)
    assert not (folder / "eul_text_model.json").exists()
    data = str(workspace / "data" / "train.jsonl")
    subject = json.loads((workspace / "data" / "train.jsonl").read_text().splitlines()[0])[
        "subject_id"
    ]
    # when it is fine-tuned, unlearned and evaluated through the command line
    assert (
        main(
            [
                "--quiet",
                "train",
                "--init",
                str(folder),
                "--data",
                data,
                "--out",
                str(tmp_path / "tuned"),
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "--quiet",
                "unlearn",
                "--model",
                str(folder),
                "--data",
                data,
                "--subject",
                subject,
                "--out",
                str(tmp_path / "layer"),
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "--quiet",
                "evaluate",
                "--model",
                str(folder),
                "--layer",
                str(tmp_path / "layer"),
                "--data",
                data,
                "--test",
                str(workspace / "data" / "test.jsonl"),
                "--subject",
                subject,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    # then every step worked on it
    assert (tmp_path / "tuned" / "config.json").is_file()
    assert "forget_acc" in json.loads(out.read_text())


def test_bench_seeds_is_refused_where_it_does_not_apply(capsys) -> None:
    err = _one_line_error(capsys, ["bench", "--seeds", "2", "--fusion-scale"])
    assert "drop --fusion-scale" in err
