"""One request end to end at a chosen model size (the tiny one here: the base size is the
benchmark's, `eul bench --size base`)."""

from __future__ import annotations

import json

import pytest

from eul.bench.model_size import SIZES, SizeConfig, format_model_size
from eul.cli.main import main


def test_one_request_on_a_sized_model_reports_its_costs(tmp_path, capsys) -> None:
    # when the tiny size runs through `eul bench --size`
    main(["bench", "--size", "tiny", "--out", str(tmp_path / "size.json")])
    saved = json.loads((tmp_path / "size.json").read_text())
    (row,) = saved["figures"]["sizes"]
    # then every step of a request was timed, on a model of the configured shape
    assert saved["benchmark"] == "model_size" and row["size"] == "tiny"
    assert set(row["seconds"]) == {"build", "eul_update", "statistics", "fuse", "evaluate",
                                   "save_base"}  # fmt: skip
    assert row["seconds_per_step"] > 0 and row["eul_steps"] >= 2
    assert 0 < row["trainable_share"] < 0.1 and row["peak_rss_mb"] > 0
    # a request's layer and statistics are a small part of what the base weighs
    assert 0 < row["request_files_mb"] < row["base_files_mb"]
    assert "| tiny |" in capsys.readouterr().out


def test_the_base_size_has_t5_bases_shape_and_a_bad_size_is_refused() -> None:
    base = SIZES["base"]
    assert (base.d_model, base.num_layers, base.num_heads, base.d_ff) == (768, 12, 12, 3072)
    with pytest.raises(ValueError, match="unknown size"):
        SizeConfig(size="huge")
    assert format_model_size([]).count("\n") == 2
