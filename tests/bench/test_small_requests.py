"""Small deletion requests, each unlearned alone: how they are chosen, what each run is given,
and the report, on a tiny configuration."""

from __future__ import annotations

import json

import pytest
import torch
from test_bench import TINY_BENCH

import eul.bench.small_requests as small
from eul.bench.classification import save_report_as
from eul.bench.envelope import run_record
from eul.bench.small_requests import (
    FIGURES,
    MODELS,
    SmallRequestsConfig,
    choose_small_requests,
    format_small_requests,
    prepare_small_requests,
    run_small_requests,
)
from eul.cli.main import main
from eul.data.records import DataError
from eul.data.synthetic import SyntheticConfig, generate

TINY_SMALL = SmallRequestsConfig(bench=TINY_BENCH, rows=(1, 3), requests=2)


def _ids(rows) -> set[str]:
    return {r.record_id for r in rows}


def test_requests_are_disjoint_of_exactly_k_rows_with_the_flipped_share() -> None:
    # given reviews of subjects of 3 to 12 rows, some rows memorised already
    _, records = generate(SyntheticConfig(n_subjects=200, seed=1))
    originals = {r.record_id: r for r in records}
    by_subject: dict[str, set[str]] = {}
    for r in records:
        if not r.memorised:
            by_subject.setdefault(r.subject_id, set()).add(r.record_id)
    # when requests of 1, 5 and 20 rows are chosen
    train, requests = choose_small_requests(records, (1, 5, 20), 6, flip_share=0.5, seed=1)
    # then every size has its requests of exactly k rows, no row and no subject in two
    assert sorted(requests) == [1, 5, 20]
    every = [request for k in requests for request in requests[k]]
    assert len(every) == 18
    assert sum(len(request) for request in every) == len(_ids(r for q in every for r in q))
    subjects = [{r.subject_id for r in request} for request in every]
    assert sum(map(len, subjects)) == len(set().union(*subjects))
    for k, chosen in requests.items():
        for request in chosen:
            assert len(request) == k
            # round(flip_share * k) rows flipped, the others as they were; none memorised before
            flipped = [r for r in request if r.memorised]
            assert len(flipped) == round(0.5 * k)
            assert all(r.label != originals[r.record_id].label for r in flipped)
            assert all(r == originals[r.record_id] for r in request if not r.memorised)
            assert not any(originals[r.record_id].memorised for r in request)
    # a 5-row request is one subject's; 20 rows are whole subjects, the last one cut
    assert all(len({r.subject_id for r in q}) == 1 for q in requests[5])
    for request in requests[20]:
        held = [
            _ids(r for r in request if r.subject_id == s) for s in {x.subject_id for x in request}
        ]
        whole = [ids for ids in held if any(ids == rows for rows in by_subject.values())]
        assert len(whole) >= len(held) - 1
    # the training rows are all still there, the chosen ones in their flipped form
    assert _ids(train) == _ids(records) and len(train) == len(records)
    flipped_ids = {r.record_id for q in every for r in q if r.memorised}
    assert {r.record_id for r in train if r.memorised} >= flipped_ids
    assert all(r in train for q in every for r in q)
    # and a 1-row request leaves the subject's other rows in training
    for request in requests[1]:
        (row,) = request
        assert by_subject[row.subject_id] <= _ids(train)


def test_memorised_share_zero_gives_ordinary_rows() -> None:
    _, records = generate(SyntheticConfig(n_subjects=120, seed=2))
    train, requests = choose_small_requests(records, (5, 20), 3, flip_share=0.0, seed=2)
    originals = {r.record_id: r for r in records}
    for chosen in requests.values():
        for request in chosen:
            assert not any(r.memorised for r in request)
            assert all(r == originals[r.record_id] for r in request)
    assert train == records


def test_too_few_subjects_for_the_requests_is_a_data_error() -> None:
    _, records = generate(SyntheticConfig(n_subjects=10, seed=3))
    with pytest.raises(DataError, match="not enough subjects"):
        choose_small_requests(records, (20,), 10, flip_share=0.5, seed=3)
    with pytest.raises(ValueError, match="repeat"):
        SmallRequestsConfig(rows=(5, 5))


def test_each_request_is_unlearned_alone_and_the_one_oracle_saw_none(monkeypatch, tmp_path):
    # given the tiny protocol, with every training run and method run recorded
    trained, tasks = [], []

    def train_full(model, rows, *args, **kwargs):
        trained.append(list(rows))
        return real_train(model, rows, *args, **kwargs)

    class Recorded:
        def __init__(self, method, name):
            self.method, self.name = method, name

        def run(self, model, task, progress=True):
            layers = [] if self.name == "retrain" else list(model.unlearning_layers().layers)
            tasks.append((self.name, task, layers))
            return self.method.run(model, task, progress)

    real_train, real_get = small.train_full, small.get_method
    monkeypatch.setattr(small, "train_full", train_full)
    monkeypatch.setattr(small, "get_method", lambda n, **kw: Recorded(real_get(n, **kw), n))
    data = prepare_small_requests(TINY_SMALL)
    # when it runs
    report = run_small_requests(TINY_SMALL, progress=False, log=lambda _: None)
    # then the original trained on every training row, the flipped ones included
    assert trained[0] == data.train and any(r.memorised for r in data.request_rows)
    # the one oracle retrained on no row of any request
    oracles = [task for name, task, _ in tasks if name == "retrain"]
    assert len(oracles) == 1
    assert not _ids(oracles[0].retained) & _ids(data.request_rows)
    assert _ids(oracles[0].retained) | _ids(data.request_rows) == _ids(data.train)
    # and each EUL run got its own request alone, the rest of the training rows as retained,
    # on a copy of the original with no other request's layer in it
    runs = [(task, layers) for name, task, layers in tasks if name == "eul"]
    requests = [request for k in TINY_SMALL.rows for request in data.requests[k]]
    assert len(runs) == len(requests) == 4
    for (task, layers), request in zip(runs, requests, strict=True):
        assert list(task.forget) == request and layers == []
        assert _ids(task.retained) == _ids(data.train) - _ids(request)
        assert task.heldout == data.heldout
    # the report holds every size, model and figure, with gaps and targets
    assert set(report["sizes"]) == {"1", "3"}
    for k, size in report["sizes"].items():
        assert size["requests"] == 2 and size["rows"] == int(k)
        assert set(size["models"]) == set(MODELS)
        for name in MODELS:
            assert {key for key, _ in FIGURES} == set(size["models"][name])
        assert size["models"]["eul"]["forget_acc"]["n"] == 2
        assert size["models"]["eul"]["update_s"]["mean"] > 0
        assert len(size["per_request"]) == 2 and len(size["targets"]) == 4
        forget = size["models"]["eul"]["forget_acc"]["mean"]
        oracle = size["models"]["oracle"]["forget_acc"]["mean"]
        assert size["eul_minus_oracle"]["forget_acc"] == pytest.approx(forget - oracle)
        assert size["update"]["oracle_retrain_s"] == report["setup"]["oracle_retrain_s"]
    # one row and half of it flipped: round(0.5) is 0, so no memorised figure nor its target
    one, three = report["sizes"]["1"], report["sizes"]["3"]
    assert one["memorised_rows"] == 0 and one["models"]["eul"]["forget_memorised_acc"]["n"] == 0
    assert one["targets"][2]["met"] is None and three["targets"][2]["met"] is not None
    assert three["memorised_rows"] == 2
    table = format_small_requests(report)
    assert "| 1 | eul |" in table and "| 3 | eul - oracle |" in table
    assert "no flipped rows" in table
    # and it is written in the result envelope
    save_report_as(report, table, tmp_path / "small.json")
    saved = json.loads((tmp_path / "small.json").read_text())
    assert saved["benchmark"] == "small_requests" and set(saved["figures"]) == {"sizes", "setup"}
    assert saved["settings"]["rows"] == [1, 3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sequential"], "drop --sequential"),
        (["--fusion-scale"], "drop --fusion-scale"),
        (["--task", "generation"], "drop --task generation"),
        (["--seeds", "2"], "drop --seeds"),
        (["--variants"], "drop --variants"),
    ],
)
def test_bench_cli_refuses_small_requests_with_what_makes_no_sense(argv, message, capsys):
    assert main(["bench", "--small-requests", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("sizes", ["0,5", "5,5", "5,x"])
def test_bench_cli_refuses_request_sizes_that_are_not_distinct_counts(sizes, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--small-requests", "--request-rows", sizes])
    assert exit_.value.code == 2
    assert "--request-rows" in capsys.readouterr().err


def test_bench_cli_refuses_the_request_options_without_small_requests(capsys):
    assert main(["bench", "--requests", "3"]) == 2
    assert "go with --small-requests" in capsys.readouterr().err


def test_bench_cli_passes_the_small_requests_options_through(monkeypatch, tmp_path, capsys):
    seen = {}

    def record(config, progress, device):
        seen["config"], seen["device"] = config, device
        setup = {"requests_per_size": config.requests, "oracle_retrain_s": 1.0}
        return {"sizes": {}, "setup": setup, "run": run_record("small_requests", {}, "cpu")}

    monkeypatch.setattr(small, "run_small_requests", record)
    out = tmp_path / "small.json"
    argv = ["--quiet", "bench", "--small-requests", "--quick", "--request-rows", "1,5,20"]
    argv += ["--requests", "4", "--memorised-share", "0", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    config = seen["config"]
    assert config.rows == (1, 5, 20) and config.requests == 4
    assert config.bench.quick and config.flip_share == 0.0
    assert seen["device"] == torch.device("cpu")
    assert json.loads(out.read_text())["benchmark"] == "small_requests"
    assert "4 requests per size" in capsys.readouterr().out
    # the defaults: requests of 5 and 20 rows, 10 of each; and a --data file reaches it
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("review,label\n" + "".join(f"a film {i},{i % 2}\n" for i in range(9)))
    argv = ["--quiet", "bench", "--small-requests", "--data", str(reviews), "--device", "cpu"]
    assert main([*argv, "--text-col", "review"]) == 0
    config = seen["config"]
    assert config.rows == (5, 20) and config.requests == 10 and config.flip_share == 0.5
    assert config.bench.data == str(reviews) and config.bench.data_file.columns.text == "review"
