"""The fusion scale benchmark on a tiny model."""

from __future__ import annotations

import json

from conftest import TINY_SPEC

from eul.bench.fusion_scale import (
    draw_fusion_scale,
    format_fusion_scale,
    run_fusion_scale,
    save_fusion_scale,
)


def test_fusion_scale_reports_cost_per_request_count(tmp_path) -> None:
    rows = run_fusion_scale(counts=(1, 4), spec=TINY_SPEC, tokens_per_request=20, stacked_limit=1)
    assert [r["requests"] for r in rows] == [1, 4]
    for row in rows:
        for form in ("shared", "linear"):
            assert row[f"fuse_s_{form}"] > 0
            assert row[f"fuse_peak_mb_{form}"] > 0
        assert row["forward_ms_fused"] > 0
        assert row["forward_ms_linear"] > 0
    assert rows[0]["forward_ms_stacked"] > 0
    assert rows[1]["forward_ms_stacked"] != rows[1]["forward_ms_stacked"]  # NaN: past the limit
    assert "| 4 |" in format_fusion_scale(rows)
    [figure] = draw_fusion_scale({"fusion_scale": rows}, tmp_path / "fusion-scale.json")
    assert figure == tmp_path / "fusion-scale-cost.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = save_fusion_scale({"fusion_scale": rows}, tmp_path / "scale.json", seed=3)
    assert [p.name for p in written] == ["scale.json", "scale.md", "scale-cost.png"]
    saved = json.loads(written[0].read_text())
    assert saved["benchmark"] == "fusion_scale" and saved["settings"]["seed"] == 3
    assert saved["figures"]["fusion_scale"][1]["forward_ms_stacked"] is None  # NaN as null
    assert written[1].read_text().strip() == format_fusion_scale(rows)
