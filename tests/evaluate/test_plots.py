"""The figures: what each draws (bars, lines, legends) and that each is written as a PNG."""

from __future__ import annotations

import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from eul.evaluate.metrics import membership_roc
from eul.evaluate.plots import (
    batch_plots,
    fusion_scale_figure,
    metrics_figure,
    plot_metrics,
    plot_roc,
    plot_sequential,
    plots_markdown,
    roc_figure,
    sequential_figure,
    sibling,
)

PNG = b"\x89PNG\r\n\x1a\n"
SIGNALS = ("loss", "zlib", "min_k")
MODELS = {
    "original": {"test_acc": 0.82, "forget_acc": 1.0, "mia_auc": 0.8},
    "oracle": {"test_acc": 0.81, "forget_acc": 0.7, "mia_auc": 0.5},
    "eul": {"test_acc": 0.80, "forget_acc": 0.72, "mia_auc": None},
}


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def _curve(shift: float, seed: int) -> dict:
    rng = random.Random(seed)
    forget = {s: [rng.gauss(shift, 1) for _ in range(20)] for s in SIGNALS}
    unseen = {s: [rng.gauss(0, 1) for _ in range(60)] for s in SIGNALS}
    return membership_roc(forget, unseen)


def _lines(ax) -> list:
    """The lines a person sees (legend-less helpers included, nothing hidden)."""
    return [line for line in ax.lines if line.get_visible()]


def test_metric_bars_are_grouped_per_model_with_a_line_per_target_bound(tmp_path):
    # given three models, three metrics and targets: two bounds on one metric, one on another
    targets = {"forget_acc": (0.65, 0.75), "test_acc": (0.81, None)}
    fig = metrics_figure(MODELS, ["test_acc", "forget_acc", "mia_auc"], targets=targets)
    [ax] = fig.axes
    # then a bar per (model, metric), grouped by model, and a dashed line per bound
    assert [len(c.patches) for c in ax.containers] == [3, 3, 3]
    assert [c.get_label() for c in ax.containers] == ["original", "oracle", "eul"]
    assert sorted(line.get_ydata()[0] for line in _lines(ax)) == [0.65, 0.75, 0.81]
    # and each bar is labelled with its value; the missing measurement is marked, not zero
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("not measured") == 1
    assert {"0.82", "0.70", "0.50"} <= set(texts) and "nan" not in texts
    # and the same drawn to a file is a PNG
    path = plot_metrics(MODELS, ["test_acc"], tmp_path / "deep" / "m.png", targets=targets)
    assert _is_png(path)


def test_per_request_panels_have_a_group_of_bars_per_request():
    # given five requests, measured on forget accuracy but without memorised rows
    per_request = {
        f"req-{i}": {
            "production": {"forget_acc": 1.0, "forget_memorised_acc": None},
            "candidate": {"forget_acc": 0.1 * i, "forget_memorised_acc": None},
        }
        for i in range(5)
    }
    models = {"production": {"test_acc": 0.8}, "candidate": {"test_acc": 0.79}}
    fig = metrics_figure(
        models,
        ["test_acc"],
        per_request=per_request,
        request_metrics=["forget_acc", "forget_memorised_acc"],
    )
    # then a panel for all rows, one for forget accuracy, none for what was not measured
    overall, by_request = fig.axes
    assert [len(c.patches) for c in by_request.containers] == [5, 5]
    heights = [p.get_height() for p in by_request.containers[1].patches]
    assert heights == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # a request forgotten to 0 is still seen: its bar carries its value
    assert "0.00" in [t.get_text() for t in by_request.texts]
    assert [t.get_text() for t in by_request.get_xticklabels()] == list(per_request)


def test_roc_panels_hold_a_curve_per_model_and_the_diagonal(tmp_path):
    curves = {"original": _curve(1.5, 1), "eul": _curve(0.2, 2), "oracle": None}
    fig = roc_figure(curves)
    # one panel per membership signal; the model without a curve is left out
    assert len(fig.axes) == 3
    for ax, signal in zip(fig.axes, SIGNALS, strict=True):
        lines = _lines(ax)
        assert len(lines) == 3
        labels = [line.get_label() for line in lines]
        assert labels[0] == f"original (AUC {curves['original']['auc'][signal]:.3f})"
        assert labels[-1].startswith("chance")
        assert list(lines[-1].get_xdata()) == [0, 1] == list(lines[-1].get_ydata())
    assert _is_png(plot_roc(curves, tmp_path / "roc.png"))
    # and the figure says what a curve below the chance line means
    assert "below the chance line" in fig.get_supxlabel().replace("\n", " ")
    with pytest.raises(ValueError, match="no ROC curve"):
        roc_figure({"eul": None})


def test_coinciding_signals_get_one_roc_panel_that_says_why():
    # given one-token answers: every signal ranks the rows alike
    rng = random.Random(3)
    scores = [rng.gauss(0, 1) for _ in range(20)]
    unseen = [rng.gauss(0, 1) for _ in range(60)]
    same = membership_roc({s: scores for s in SIGNALS}, {s: unseen for s in SIGNALS})
    fig = roc_figure({"candidate": same, "production": same})
    # then one panel, whose title says the others coincide
    [ax] = fig.axes
    assert "coincide" in ax.get_title()


def test_sequential_panels_hold_a_line_per_way_of_serving(tmp_path):
    steps = [
        {
            serving: {"test_acc": 0.8, "forget_acc": 1.0 / k, "mia_auc": 0.5}
            for serving in ("stacked", "fused", "oracle", "original")
        }
        for k in (1, 2, 3)
    ]
    fig = sequential_figure(steps, metrics=("test_acc", "forget_acc", "mia_auc"))
    assert len(fig.axes) == 3
    forget = fig.axes[1]
    assert [line.get_label() for line in _lines(forget)] == [
        "original",
        "stacked",
        "fused",
        "oracle",
    ]
    assert list(_lines(forget)[1].get_ydata()) == pytest.approx([1.0, 0.5, 1 / 3])
    assert _is_png(plot_sequential(steps, tmp_path / "steps.png"))
    with pytest.raises(ValueError, match="no step"):
        sequential_figure([])


def test_fusion_scale_panels_show_every_form_measured():
    rows = [
        {"requests": n, "fuse_s_shared": 0.01 * n, "fuse_s_linear": 0.02 * n,
         "fuse_peak_mb_shared": 1.0, "fuse_peak_mb_linear": 2.0, "forward_ms_base": 30.0,
         "forward_ms_fused": 31.0, "forward_ms_linear": 32.0,
         "forward_ms_stacked": 40.0 if n < 100 else None}
        for n in (1, 10, 100)
    ]  # fmt: skip
    fig = fusion_scale_figure(rows)
    assert [len(_lines(ax)) for ax in fig.axes] == [2, 2, 4]
    stacked = _lines(fig.axes[2])[3].get_ydata()
    assert stacked[2] != stacked[2]  # NaN: a gap where it was not measured


def test_batch_plots_draw_metrics_and_roc_only_where_there_are_forget_rows(tmp_path):
    evaluation = {
        "candidate": {"test_acc": 0.8, "forget_acc": 0.5, "mia_auc": 0.55},
        "production": {"test_acc": 0.81, "forget_acc": 1.0, "mia_auc": 0.8},
        "per_request": {
            "req-a": {"rows": 4, "candidate": {"forget_acc": 0.5}, "production": {"forget_acc": 1}}
        },
        "mia_roc": {"candidate": _curve(0.2, 3), "production": _curve(1.5, 4)},
    }
    written = batch_plots(evaluation, {"mia_auc": (None, 0.6)}, tmp_path / "batch")
    assert [p.name for p in written] == ["metrics.png", "mia-roc.png"]
    assert all(_is_png(p) for p in written)
    # a compaction batch (no request, no forget row) has only the metrics to show, the
    # forget side unmeasured (NaN), and is drawn without a layout warning
    unmeasured = {"test_acc": 0.8, "forget_acc": float("nan"), "mia_auc": float("nan")}
    retrain = {
        "candidate": unmeasured,
        "production": dict(unmeasured),
        "per_request": {},
        "mia_roc": {"candidate": None, "production": None},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = batch_plots(retrain, {"test_acc": (0.78, None)}, tmp_path / "retrain")
    assert [p.name for p in written] == ["metrics.png"] and _is_png(written[0])


def test_plots_markdown_names_each_file_and_where_it_is_kept():
    links = [
        {"name": "metrics.png", "uri": "runs:/abc/plots/metrics.png",
         "location": "s3://bucket/1/abc/artifacts/plots/metrics.png"},
        {"name": "mia-roc.png", "uri": "runs:/abc/plots/mia-roc.png",
         "location": "file:///srv/my%20project/state/mlartifacts/abc/plots/mia-roc.png"},
    ]  # fmt: skip
    text = plots_markdown(links)
    assert "## Plots" in text
    assert "- metrics.png: `runs:/abc/plots/metrics.png`, stored at `s3://bucket/1/abc/" in text
    # a local file is shown as a readable path, not a file: link a browser cannot open
    assert "stored at `/srv/my project/state/mlartifacts/abc/plots/mia-roc.png`" in text
    assert "file:" not in text
    assert plots_markdown([]) == ""


def test_sibling_shares_the_report_stem():
    assert sibling("results/bench.json", "mia-roc") == Path("results/bench-mia-roc.png")


def test_importing_eul_leaves_matplotlib_unloaded():
    code = (
        "import sys, eul.evaluate.plots, eul.pipeline.gates, eul.pipeline.release; "
        "print('matplotlib' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
