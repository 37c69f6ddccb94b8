"""Flow parameters are checked before any work starts: a project folder that is not there,
a params file that does not load, a store that does not answer, an unknown request id or
version, each fails at once in one line that names the parameter and the fix."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import STORE_ENV

from eul.layers import LayerConfig
from eul.model.text_model import ModelSpec, TextModel
from eul.pipeline.checks import (
    ParameterError,
    check_project,
    check_promotion,
    check_request_id,
    check_version,
)
from eul.pipeline.context import PipelineError
from eul.stores.log.store import Ledger
from eul.stores.registry.runs import log_batch_run
from eul.stores.registry.tags import compliance_tags
from eul.stores.registry.versions import register_version


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder with params.yaml and a log holding one request."""
    for name in STORE_ENV:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("registry:\n  model_name: checked-model\n")
    with Ledger(
        f"sqlite:///{root / 'state/deletion-log.sqlite'}", params_path=root / "params.yaml"
    ) as ledger:
        ledger.submit(subject_id="s0001", request_id="req-1")
    return root


def test_a_usable_project_gives_its_context(project) -> None:
    ctx = check_project(str(project), "params.yaml")
    assert ctx.root == project.resolve()
    assert ctx.settings.model_name == "checked-model"


@pytest.mark.parametrize(
    ("project_dir", "params_file", "words"),
    [
        ("", "params.yaml", "project_dir is empty"),
        ("{root}/nowhere", "params.yaml", "project_dir: no folder at"),
        ("{root}", "other.yaml", "params_file: no other.yaml in"),
        ("{root}", "bad.yaml", "params_file: "),
    ],
)
def test_bad_project_parameters_fail_in_one_line(project, project_dir, params_file, words):
    # given a params file with a knob that does not exist
    (project / "bad.yaml").write_text("gates:\n  max_mia: 0.5\n")
    # when a flow's project parameters are checked
    with pytest.raises(ParameterError) as error:
        check_project(project_dir.format(root=project), params_file)
    # then the message is one line that names the parameter
    message = str(error.value)
    assert words in message and "\n" not in message
    if params_file == "bad.yaml":
        assert "gates.max_mia: unknown key" in message


def test_an_mlflow_server_that_does_not_answer_stops_the_run_at_once(project, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(PipelineError, match="does not answer.*MLFLOW_TRACKING_URI"):
        check_project(str(project))


def test_request_ids_must_be_in_the_log(project) -> None:
    ctx = check_project(str(project))
    check_request_id(ctx, "req-1")  # known: no error
    with pytest.raises(ParameterError, match="request_id: no request 'req-2' in the log"):
        check_request_id(ctx, "req-2")
    with pytest.raises(ParameterError, match="request_id is empty"):
        check_request_id(ctx, "  ")


@pytest.mark.parametrize(
    ("reviewer", "version", "reason", "words"),
    [
        (" ", None, None, "reviewer is empty"),
        ("dana", 0, None, "versions start at 1, got 0"),
        ("dana", 2, "  ", "override_reason is empty"),
    ],
)
def test_promotion_parameters(reviewer, version, reason, words) -> None:
    with pytest.raises(ParameterError, match=words):
        check_promotion(reviewer, version, reason)


def test_versions_must_be_registered(project, tmp_path) -> None:
    # given a registry with one version of the project's model
    ctx = check_project(str(project))
    tm = TextModel.create(["a review", "positive", "negative"], ModelSpec(
        vocab_size=100, d_model=8, num_layers=1, num_heads=2, d_ff=16), seed=0)  # fmt: skip
    tm.save(tmp_path / "base")
    tm.unlearning_layers().add_layer("req-1", LayerConfig(width=2))
    layer = tm.unlearning_layers().save_layer("req-1", tmp_path / "layer")
    run_id = log_batch_run(ctx.settings, "b1", ["req-1"], {"test_acc": 0.5})
    tags = compliance_tags(["req-1"], 1, "h", {"g": {"passed": True}})
    version = register_version(ctx.settings, run_id, tmp_path / "base", layer, tags, "v")
    # then that version passes and the next one, not registered, is refused
    check_version(ctx, version)
    with pytest.raises(ParameterError, match=f"has no version {version + 1} in"):
        check_version(ctx, version + 1)


@pytest.mark.slow
def test_flows_refuse_bad_parameters_before_any_work(project, tmp_path, prefect_harness):
    from flows.nightly import nightly_deletion_batch
    from flows.promote import promote_version
    from flows.unlearn_request import unlearn_request

    # a project folder that is not there: refused, and nothing was created there
    missing = tmp_path / "nowhere"
    with pytest.raises(ParameterError, match="project_dir: no folder at"):
        nightly_deletion_batch(project_dir=str(missing))
    assert not missing.exists()
    # an unknown request id, and a promotion nobody decided
    with pytest.raises(ParameterError, match="request_id: no request 'req-9'"):
        unlearn_request("req-9", project_dir=str(project))
    with pytest.raises(ParameterError, match="reviewer is empty"):
        promote_version(reviewer="", project_dir=str(project))
    # and no work folder was made by any of them
    assert not (project / "state/pipeline").exists()
