"""The command line's help and its errors: commands grouped by job, defaults in every
command's help, and one line on stderr that names the fix for each kind of mistake (exit 2)
or failing store (exit 1), never a traceback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from eul.cli.main import COMMAND_GROUPS, _subcommands, build_parser, command_overview, main
from eul.data.records import LABEL_WORDS
from eul.model.text_model import ModelSpec, TextModel

SPEC = ModelSpec(vocab_size=300, d_model=16, num_layers=1, num_heads=2, d_ff=32)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `eul ARGV`, whether it returns or exits."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A folder with generated data, a real (small, untrained) T5 and things that are not
    what a command wants: a folder with no model, a config.json without a model type."""
    root = tmp_path_factory.mktemp("errors")
    assert main(["--quiet", "data", "generate", "--out", str(root / "d"), "--subjects", "20"]) == 0
    texts = [json.loads(line)["text"] for line in (root / "d/train.jsonl").read_text().splitlines()]
    TextModel.create(texts + list(LABEL_WORDS), SPEC, seed=0).save(root / "model")
    (root / "empty").mkdir()
    (root / "notamodel").mkdir()
    (root / "notamodel" / "config.json").write_text("{}")
    (root / "bad-params.yaml").write_text("train:\n  epochs: 3\n  epoch: 4\n")
    (root / "garbage.sqlite").write_bytes(b"this is not a database, it is text" * 4)
    return root


# -- help ---------------------------------------------------------------------------------


def test_top_level_help_lists_every_command_by_job(capsys) -> None:
    # when `eul --help` is printed
    code, out, _ = run(["--help"], capsys)
    # then each group has a heading, and every command and action has its one-line help
    assert code == 0
    for title, _ in COMMAND_GROUPS:
        assert f"\n{title}:\n" in out
    assert "Other:" not in out  # every command belongs to a group
    for line in ("requests submit", "data purge", "stage train", "unlearn", "audit", "doctor"):
        assert f"\n  {line} " in out
    assert "record a deletion request" in out and "`eul COMMAND --help`" in out


def test_every_command_is_in_a_group() -> None:
    parser = build_parser()
    grouped = {name for _, names in COMMAND_GROUPS for name in names}
    commands = {name for name, _, _ in _subcommands(parser)}
    assert commands == grouped
    assert "Other:" not in command_overview(parser)


def test_eul_alone_prints_the_overview_and_exits_2(capsys) -> None:
    code, out, _ = run([], capsys)
    assert code == 2 and "Models and unlearning:" in out


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["train"], "passes over the data (default: 12)"),
        (["unlearn"], "bottleneck width of the layer (default: 64)"),
        (["data", "generate"], "number of people (default: 400)"),
        (["data", "purge"], "(default: deployed)"),
        (["doctor"], "--no-models"),
        (["requests", "list"], "(default: params.yaml; may be absent)"),
    ],
)
def test_command_help_shows_defaults(argv, shown, capsys) -> None:
    code, out, _ = run([*argv, "--help"], capsys)
    assert code == 0
    assert f"usage: eul {' '.join(argv)}" in out
    assert shown in " ".join(out.split())  # help text is wrapped: compare without breaks


# -- errors -------------------------------------------------------------------------------

D = "{ws}/d/train.jsonl"
T = "{ws}/d/test.jsonl"
M = "{ws}/model"

# (argv, exit status, words of the message that name the problem or the fix)
BAD_INPUT = [
    # a misspelt command or choice
    (["trian"], 2, "did you mean 'train'"),
    (["train", "--family", "t6", "--data", D, "--out", "x"], 2, "choose from 't5', 'gpt2'"),
    # out-of-range numbers, refused by the parser
    (["train", "--data", D, "--out", "x", "--epochs", "0"], 2, "--epochs: must be at least 1"),
    (["train", "--data", D, "--out", "x", "--lr", "-1"], 2, "--lr: must be above 0"),
    (["unlearn", "--model", M, "--data", D, "--out", "x", "--width", "0"], 2, "at least 1"),
    (["data", "generate", "--out", "x", "--memorised-share", "2"], 2, "between 0 and 1"),
    (["bench", "--anchor-weight", "-1"], 2, "must be 0 or more"),
    (["train", "--data", D, "--out", "x", "--d-model", "15", "--heads", "2"], 2, "multiple of"),
    (["train", "--data", D, "--out", "x", "--device", "gpu"], 2, "--device: unknown device 'gpu'"),
    (["unlearn", "--model", M, "--data", D, "--out", "x", "--subject", "s0001", "--device", "tpu"],
     2, "use auto, cpu, cuda, cuda:N or mps"),
    (["evaluate", "--model", M, "--data", D, "--test", T, "--subject", "s0001",
      "--device", "cuda:x"], 2, "--device: unknown device"),
    (["bench", "--device", "gpu"], 2, "--device: unknown device"),
    # missing files and folders, files where folders are wanted and the reverse
    (["train", "--data", "{ws}/nope.jsonl", "--out", "x"], 2, "no file at"),
    (["train", "--data", "{ws}/d", "--out", "x"], 2, "is a folder, not a file"),
    (["data", "generate", "--out", D], 2, "is a file; give a folder"),
    (["evaluate", "--model", M, "--data", D, "--test", "{ws}/no.jsonl", "--subject", "s0001"],
     2, "--test: no file at"),
    (["unlearn", "--model", M, "--data", D, "--out", "x", "--ids-file", "{ws}/no.txt"],
     2, "one record id per line"),
    (["data", "partition", "--snapshot", "{ws}/no.json", "--data", D, "--out", "p"],
     2, "eul requests snapshot"),
    # a model folder that is not a model, a layer folder that is not a layer
    (["unlearn", "--model", "{ws}/nomodel", "--data", D, "--out", "x", "--subject", "s0001"],
     2, "is not there; give a folder written by `eul train`"),
    (["unlearn", "--model", "{ws}/empty", "--data", D, "--out", "x", "--subject", "s0001"],
     2, "not a model folder (no config.json)"),
    (["train", "--init", "{ws}/notamodel", "--data", D, "--out", "x"], 2, "no model_type"),
    (["evaluate", "--model", M, "--layer", "{ws}/empty", "--data", D, "--test", T,
      "--subject", "s0001"], 2, "written by `eul unlearn`"),
    # ids and statuses that do not exist
    (["unlearn", "--model", M, "--data", D, "--out", "x", "--subject", "s9999"],
     2, "check them against the subject_id and record_id"),
    (["data", "partition", "--snapshot", D, "--data", D, "--out", "p", "--status", "done"],
     2, "use one or more of received, validated"),
    (["requests", "show", "req-nope", "--log-url", "sqlite:///{ws}/log.sqlite"],
     2, "`eul requests list`"),
    (["requests", "submit", "--subject", "bad id", "--log-url", "sqlite:///{ws}/log.sqlite"],
     2, "bad subject id"),
    # params files: named but absent, or with a key that does not exist
    (["audit", "--project", "{ws}", "--params", "nope.yaml"], 2, "check the file name"),
    (["requests", "list", "--params", "{ws}/nope.yaml"], 2, "--params: no file at"),
    (["data", "init", "--params", "{ws}/bad-params.yaml"], 2, "train.epoch: unknown key"),
    (["audit", "--project", "{ws}/nowhere"], 2, "give the project folder"),
    (["audit", "--project", "{ws}", "--at", "someday"], 2, "ISO date"),
    # steps run before their inputs exist
    (["stage", "prepare"], 2, "run `eul data init`"),
    (["stage", "train"], 2, "run `eul stage prepare`"),
    (["data", "remote", "r", "http://example.org/x"], 2, "starts with s3://"),
    (["data", "purge", "--request", "r=1", "--remote", "nowhere"], 2, "not a DVC remote"),
    # stores that cannot be used: exit 1
    (["requests", "list", "--log-url", "sqlite:///{ws}/garbage.sqlite"], 1, "not a database"),
    (["data", "purge", "--request", "req-1=r1"], 1, "track the data with `dvc add`"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "status", "words"), BAD_INPUT)
def test_each_mistake_is_one_line_that_names_the_fix(
    argv, status, words, ws, capsys, monkeypatch
) -> None:
    # given an empty working folder (no params.yaml, no data, not a DVC project)
    monkeypatch.chdir(ws / "empty")
    monkeypatch.delenv("EUL_LOG_URL", raising=False)
    # when the command runs
    code, _, err = run(["--quiet", *(a.format(ws=ws) for a in argv)], capsys)
    # then it ends with one line on stderr, the right exit status and the fix
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("eul: error: ")
    assert code == status, err
    assert words in err


@pytest.mark.parametrize("command", ["train", "unlearn", "evaluate", "bench"])
def test_a_gpu_asked_for_on_a_machine_without_one_is_one_line_before_any_work(
    command, ws, capsys, monkeypatch
) -> None:
    # given a machine without a GPU
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(ws / "empty")
    argv = {
        "train": ["train", "--data", D, "--out", "x"],
        "unlearn": ["unlearn", "--model", M, "--data", D, "--out", "x", "--subject", "s0001"],
        "evaluate": ["evaluate", "--model", M, "--data", D, "--test", T, "--subject", "s0001"],
        "bench": ["bench", "--quick"],
    }[command]
    # when the command asks for one
    code, out, err = run(["--quiet", *(a.format(ws=ws) for a in argv), "--device", "cuda"], capsys)
    # then it stops at once: exit 2, one line that names the fix, nothing written
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "--device: device 'cuda' is not available" in err
    assert "use --device cpu or auto" in err
    assert out == ""
    assert not (ws / "empty" / "x").exists()


def test_an_mlflow_server_that_does_not_answer_fails_fast_in_one_line(
    ws, tmp_path, capsys, monkeypatch
) -> None:
    # given a project whose MLflow server is down
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    # when the audit runs
    code, _, err = run(["audit"], capsys)
    # then it fails at once (not after MLflow's minutes of retries), exit 1, naming the fix
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "does not answer" in err and "MLFLOW_TRACKING_URI" in err


def test_eul_debug_shows_the_traceback(ws, capsys, monkeypatch) -> None:
    monkeypatch.setenv("EUL_DEBUG", "1")
    code, _, err = run(["train", "--data", str(ws / "nope.jsonl"), "--out", "x"], capsys)
    assert code == 2
    assert err.startswith("eul: error: ") and "Traceback" in err
