"""`eul bench --scale` on a few requests: every way of training a batch is measured, a wave's
layer is the same in any worker process, and what stays after the purge does not grow with
the batch."""

from __future__ import annotations

import pytest

from eul.bench.scale import ScaleConfig, format_scale, run_scale, short_eul
from eul.methods.eul import EULConfig

pytestmark = pytest.mark.slow


def test_the_scale_benchmark_measures_every_way_and_workers_do_not_change_the_result():
    eul = EULConfig(**{**short_eul().__dict__, "epochs": 1, "retained_sample": 64})
    config = ScaleConfig(
        counts=(1, 3), workers=(1, 2), train_epochs=1, retained_subjects=40, eval_rows=50, eul=eul
    )
    result = run_scale(config, log=lambda _: None)
    rows = {(r["requests"], r["way"], r["workers"]): r for r in result["rows"]}
    ways = (("stacked", 1), ("side by side", 1), ("side by side", 2))
    assert set(rows) == {(n, way, w) for n in (1, 3) for way, w in ways}
    # a lone request is one wave whatever the workers: the same layer in either process
    one, two = rows[(1, "side by side", 1)], rows[(1, "side by side", 2)]
    for metric in ("test_acc", "forget_acc_mean", "mia_auc"):
        assert one[metric] == two[metric], metric
    for row in result["rows"]:
        assert row["wall_s"] > 0 and row["fuse_s"] >= 0 and row["forward_ms"] > 0
        assert row["request_bytes"] > 0 and 0 < row["update_share_of_retrain"]
    # the fused state is one fixed-size layer and sums, plus the requests' ids: two more
    # requests add a few bytes, not a layer (hundreds of KB)
    grown = rows[(3, "stacked", 1)]["state_bytes"] - rows[(1, "stacked", 1)]["state_bytes"]
    assert 0 < grown < 200 < rows[(1, "stacked", 1)]["request_bytes"]
    assert "| 3 | side by side | 2 |" in format_scale(result)
