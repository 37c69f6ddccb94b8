"""Figures of what the project already measures, for people who would rather look than read.

Grouped bars of metrics per model (and per request where a batch has several), the
membership-inference ROC curves of forget rows against held-out rows, the sequential protocol
step by step, and the cost of fusion as requests pile up. Each `*_figure` function takes plain
dicts and lists (what the benchmarks write as JSON, a batch's evaluation) and returns the
figure; each `plot_*` function draws the same and writes it as a PNG, returning the path.

matplotlib is imported inside the functions, and figures are drawn on an Agg canvas without
pyplot: `import eul` stays light, and pipeline tasks in threads may draw at the same time.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Metrics = Mapping[str, Any]
# (lowest, highest) value a metric may take to meet its target; None where unbounded.
Band = tuple[float | None, float | None]

MAX_REQUESTS = 40
SIGNAL_TITLES = {
    "loss": "loss",
    "zlib": "zlib-normalised loss",
    "min_k": "min-k% token probability",
}
SEQUENTIAL_METRICS = ("test_acc", "forget_acc", "forget_memorised_acc", "mia_auc")
# The same colour for the same role across every figure: the model before unlearning, the
# unlearned model, the retrained oracle.
COLORS = {
    "original": "#8c8c8c",
    "production": "#8c8c8c",
    "oracle": "#2ca02c",
    "eul": "#1f77b4",
    "candidate": "#1f77b4",
    "fused": "#1f77b4",
}
OTHER_COLORS = ("#ff7f0e", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


def _number(value: Any) -> float:
    """A float, NaN for a missing measurement (None in JSON)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


def _palette(names: Sequence[str]) -> dict[str, str]:
    """A colour per name: the role's own colour where it has one, the others in turn."""
    others = iter(OTHER_COLORS * (1 + len(names) // len(OTHER_COLORS)))
    return {name: COLORS.get(name) or next(others) for name in names}


def _figure(panels: int, width: float, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(max(width, 5.0), 32.0), height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    return path


def sibling(json_path: str | Path, name: str) -> Path:
    """The PNG beside a report: results/bench.json, "metrics" -> results/bench-metrics.png."""
    json_path = Path(json_path)
    return json_path.with_name(f"{json_path.stem}-{name}.png")


# -- grouped bars -------------------------------------------------------------------------


def _bars(ax: Axes, series: Mapping[str, Metrics], xs: Sequence[str]) -> float:
    """One bar per (x, series), grouped by x, each labelled with its value (a bar at 0 is
    then still seen); returns the tallest value drawn."""
    width = 0.8 / max(len(series), 1)
    colors = _palette(list(series))
    tallest = 0.0
    small = len(xs) * len(series) > 24
    for i, (name, values) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        heights = [_number(values.get(x)) for x in xs]
        positions = [k + offset for k in range(len(xs))]
        # a missing value is a flat bar marked "not measured" (NaN bars break the layout)
        flat = [0.0 if math.isnan(h) else h for h in heights]
        bars = ax.bar(positions, flat, width, label=name, color=colors[name])
        labels = ["" if math.isnan(h) else f"{h:.2f}" for h in heights]
        ax.bar_label(bars, labels=labels, fontsize=5 if small else 6, rotation=90, padding=2)
        for position, height in zip(positions, heights, strict=True):
            if math.isnan(height):
                ax.text(position, 0.02, "not measured", rotation=90, ha="center",
                        va="bottom", fontsize=7, color="dimgray")  # fmt: skip
            else:
                tallest = max(tallest, height)
    ax.set_xticks(range(len(xs)), list(xs), rotation=30, ha="right", fontsize=8)
    return tallest


def _target_lines(ax: Axes, xs: Sequence[str], targets: Mapping[str, Band], label: str) -> None:
    """A dashed line across a metric's group at each bound of its target."""
    labelled = False
    for k, x in enumerate(xs):
        for bound in targets.get(x, (None, None)):
            if bound is None or math.isnan(bound):
                continue
            ax.plot(
                [k - 0.45, k + 0.45],
                [bound, bound],
                linestyle="--",
                color="black",
                linewidth=1.2,
                label=label if not labelled else "_nolegend_",
            )
            labelled = True


def metrics_figure(
    models: Mapping[str, Metrics],
    metrics: Sequence[str],
    *,
    targets: Mapping[str, Band] | None = None,
    per_request: Mapping[str, Mapping[str, Metrics]] | None = None,
    request_metrics: Sequence[str] = (),
    title: str = "",
    target_label: str = "target",
) -> Figure:
    """Grouped bars of `metrics` for each model ({model: {metric: value}}), with the targets
    ({metric: (low, high)}) as dashed lines; then, when `per_request` is given
    ({request id: {model: {metric: value}}}), one panel per metric of `request_metrics` with a
    group of bars per request (the first MAX_REQUESTS); a metric measured on no request (no
    memorised rows, say) gets no panel."""
    requests = list(per_request or {})[:MAX_REQUESTS]
    request_metrics = [
        metric
        for metric in request_metrics
        if any(
            not math.isnan(_number(values.get(metric)))
            for rid in requests
            for values in per_request[rid].values()
        )
    ]
    panels = 1 + (len(request_metrics) if requests else 0)
    bars_wide = 0.32 * max(len(models), 1)
    width = 1.5 + bars_wide * len(metrics)
    if requests:
        width += len(request_metrics) * (1.2 + bars_wide * len(requests))
    fig, axes = _figure(panels, width)
    tallest = _bars(axes[0], models, metrics)
    _target_lines(axes[0], metrics, targets or {}, target_label)
    axes[0].set_title("all rows", fontsize=9)
    for ax, metric in zip(axes[1:], request_metrics, strict=False):
        series = {
            model: {rid: (per_request[rid].get(model) or {}).get(metric) for rid in requests}
            for model in models
        }
        tallest = max(tallest, _bars(ax, series, requests))
        shown = len(per_request or {})
        more = f" (first {len(requests)} of {shown})" if shown > len(requests) else ""
        ax.set_title(f"{metric} per request{more}", fontsize=9)
    for ax in axes:
        ax.set_ylim(0, max(1.15, 1.15 * tallest))  # room for the value labels
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_metrics(
    models: Mapping[str, Metrics], metrics: Sequence[str], path: str | Path, **options: Any
) -> Path:
    """`metrics_figure` written as a PNG at `path`."""
    return save(metrics_figure(models, metrics, **options), path)


# -- membership inference ----------------------------------------------------------------


def _coinciding(present: Mapping[str, Mapping[str, Any]], signals: list[str]) -> bool:
    """Whether every signal gives every model the same curve (one-token answers: a row's
    loss, its zlib-normalised loss and its min-k% probability rank rows alike)."""
    return all(c["tpr"][s] == c["tpr"][signals[0]] for c in present.values() for s in signals[1:])


BELOW_CHANCE_NOTE = (
    "A curve below the chance line: the forget rows look less like training rows than unseen "
    "rows do (over-forgotten); an attacker who flips the score picks them out at 1 - AUC."
)


def roc_figure(curves: Mapping[str, Mapping[str, Any] | None], title: str = "") -> Figure:
    """One panel per membership signal, one ROC curve per model ({model: the output of
    `eul.evaluate.metrics.membership_roc`}, None for a model without one), the AUC in the
    legend, the chance line and what a curve below it means. Where the signals coincide
    (one-token answers), one panel says so instead of three identical ones."""
    present = {name: curve for name, curve in curves.items() if curve}
    if not present:
        raise ValueError("no ROC curve to draw: every model lacks forget or held-out rows")
    signals = [s for s in SIGNAL_TITLES if all(s in c["tpr"] for c in present.values())]
    one_panel = len(signals) > 1 and _coinciding(present, signals)
    shown = signals[:1] if one_panel else signals
    colors = _palette(list(present))
    fig, axes = _figure(len(shown), 1.0 + 3.8 * len(shown), height=4.4)
    for ax, signal in zip(axes, shown, strict=True):
        for name, curve in present.items():
            auc = _number(curve["auc"].get(signal))
            ax.plot(
                curve["fpr"],
                curve["tpr"][signal],
                color=colors[name],
                linewidth=1.6,
                label=f"{name} (AUC {auc:.3f})",
            )
        ax.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=1, label="chance (0.5)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (held-out rows)", fontsize=8)
        ax.set_ylabel("true positive rate (forget rows)", fontsize=8)
        name = SIGNAL_TITLES[signal]
        if one_panel:
            name += "\n(zlib and min-k coincide: one-token answers)"
        ax.set_title(f"MIA by {name}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    # a figure-level label, so that the constrained layout leaves it room under the axes
    fig.supxlabel(textwrap.fill(BELOW_CHANCE_NOTE, 24 * (1 + len(shown))), fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_roc(
    curves: Mapping[str, Mapping[str, Any] | None], path: str | Path, title: str = ""
) -> Path:
    """`roc_figure` written as a PNG at `path`."""
    return save(roc_figure(curves, title), path)


def plot_bench(
    report: Mapping[str, Any],
    json_path: str | Path,
    metrics: Sequence[str],
    targets: Mapping[str, Band],
    title: str,
    roc_title: str,
) -> list[Path]:
    """A benchmark's figures beside its JSON: every model's `metrics` with EUL's `targets`,
    and the MIA ROC curves when the run kept them in memory (`report["mia_roc"]`)."""
    written = [
        plot_metrics(
            report["methods"],
            metrics,
            sibling(json_path, "metrics"),
            targets=targets,
            title=title,
            target_label="EUL target",
        )
    ]
    curves = report.get("mia_roc") or {}
    if any(curves.values()):
        written.append(plot_roc(curves, sibling(json_path, "mia-roc"), roc_title))
    return written


# -- the sequential protocol ----------------------------------------------------------------


def sequential_figure(
    steps: Sequence[Mapping[str, Metrics]],
    metrics: Sequence[str] = SEQUENTIAL_METRICS,
    title: str = "",
) -> Figure:
    """One panel per metric, one line per way of serving ({serving: metrics} per step) across
    the steps; the original model dashed, as the reference. Forms that serve the same
    (stacked and fused layers) overlap: their markers differ."""
    if not steps:
        raise ValueError("no step to draw: the sequential result is empty")
    servings = list(steps[0])
    if "original" in servings:
        servings = ["original", *(s for s in servings if s != "original")]
    colors = _palette(servings)
    xs = list(range(1, len(steps) + 1))
    fig, axes = _figure(len(metrics), 2.0 + 3.2 * len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        for i, serving in enumerate(servings):
            values = [_number((step.get(serving) or {}).get(metric)) for step in steps]
            ax.plot(
                xs,
                values,
                marker=MARKERS[i % len(MARKERS)],
                markersize=5,
                markerfacecolor="none",
                color=colors[serving],
                linestyle="--" if serving == "original" else "-",
                label=serving,
            )
        ax.set_xticks(xs)
        ax.set_xlabel("requests so far", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_sequential(
    steps: Sequence[Mapping[str, Metrics]], path: str | Path, title: str = ""
) -> Path:
    """`sequential_figure` written as a PNG at `path`."""
    return save(sequential_figure(steps, title=title), path)


# -- the cost of fusion ------------------------------------------------------------------------

# (title, keys, log scale): seconds span orders of magnitude, memory and latency do not.
FUSION_PANELS = (
    ("seconds to fuse", ("fuse_s_shared", "fuse_s_linear"), True),
    ("peak MB while fusing", ("fuse_peak_mb_shared", "fuse_peak_mb_linear"), False),
    (
        "forward ms per batch",
        ("forward_ms_base", "forward_ms_fused", "forward_ms_linear", "forward_ms_stacked"),
        False,
    ),
)


def fusion_scale_figure(rows: Sequence[Metrics], title: str = "") -> Figure:
    """Time and memory of fusion, and the serving cost, against the number of requests
    (a log scale); a line per form, a gap where a form was not measured."""
    if not rows:
        raise ValueError("no row to draw: the fusion scale result is empty")
    from matplotlib.ticker import NullFormatter, StrMethodFormatter

    counts = [_number(r.get("requests")) for r in rows]
    fig, axes = _figure(len(FUSION_PANELS), 11.0)
    for ax, (panel_title, keys, log_scale) in zip(axes, FUSION_PANELS, strict=True):
        for i, key in enumerate(keys):
            ax.plot(
                counts,
                [_number(r.get(key)) for r in rows],
                marker="o",
                markersize=4,
                color=OTHER_COLORS[i],
                label=key.split("_")[-1],
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if log_scale:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("requests", fontsize=8)
        ax.set_title(panel_title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_fusion_scale(rows: Sequence[Metrics], path: str | Path, title: str = "") -> Path:
    """`fusion_scale_figure` written as a PNG at `path`."""
    return save(fusion_scale_figure(rows, title), path)


# -- a pipeline batch ------------------------------------------------------------------------


def batch_plots(
    evaluation: Mapping[str, Any], bands: Mapping[str, Band], folder: str | Path
) -> list[Path]:
    """A batch's figures for its MLflow run: candidate against production on every shared
    metric (the gates' thresholds as lines, `bands`) and per request of the batch, then the
    MIA ROC curves where the batch has forget rows. Returns the PNGs written in `folder`."""
    folder = Path(folder)
    candidate, production = evaluation["candidate"], evaluation["production"]
    models = {"production": production, "candidate": candidate}
    metrics = [k for k, v in candidate.items() if k in production and not isinstance(v, bool)]
    per_request = {
        request_id: {name: entry[name] for name in models if name in entry}
        for request_id, entry in (evaluation.get("per_request") or {}).items()
    }
    request_metrics = next(iter(per_request.values()), {}).get("candidate", {})
    written = [
        plot_metrics(
            models,
            metrics,
            folder / "metrics.png",
            targets=bands,
            per_request=per_request,
            request_metrics=list(request_metrics),
            title="candidate against production",
            target_label="gate",
        )
    ]
    curves = evaluation.get("mia_roc") or {}
    if any(curves.values()):
        written.append(
            plot_roc(curves, folder / "mia-roc.png", title="forget rows against held-out rows")
        )
    return written


def plots_markdown(links: Sequence[Mapping[str, str]]) -> str:
    """The figures of a run, each with its `runs:/` URI (what `mlflow artifacts download -u`
    takes) and where the artifact store keeps it, as a plain path where it is a local file
    (a file: link is dead in a browser); empty when there is none."""
    from urllib.parse import unquote, urlsplit

    if not links:
        return ""
    lines = ["", "## Plots", ""]
    for link in links:
        where = link["location"]
        if where.startswith("file:"):
            where = unquote(urlsplit(where).path)
        lines.append(f"- {link['name']}: `{link['uri']}`, stored at `{where}`")
    return "\n".join(lines) + "\n"
