"""Gates: what a candidate version must show before it may replace the production model.

Each night there is no oracle (a model retrained without the forgotten rows), so the gates
use only what needs none (DESIGN.md section 3):

- utility: test accuracy may fall at most `max_test_acc_drop` below the production model's,
  measured on the same test rows in the same run;
- mia_auc: the membership-inference AUC of the batch's forget rows against held-out rows
  (rows the model never saw) is at most `max_mia_auc`: above it, an attacker can still tell
  the forgotten rows from unseen ones;
- forget_vs_test: forget-set accuracy is at most test accuracy + `forget_acc_margin`: a
  model that never saw the rows would do on them about as well as on any unseen row;
- both sides (`eul.evaluate.bands`): where the evaluation drew reference bands, the MIA AUC
  and the forget accuracy must also lie inside what the candidate shows on held-out rows of
  the forget rows' kind at the request's size. Above the band it still knows the rows;
  below it, it over-forgot them: it is surer they are wrong than a model that never saw
  them would be, which tells an attacker that flips the score which rows were deleted.

A batch whose requests have no rows in the training data leaves nothing to measure on the
forget side; those two gates then pass with a note. A measurement that is missing (NaN)
where rows exist fails its gate: a gate that cannot be checked is not passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from eul.evaluate.bands import Band, ReferenceBands, band_verdict
from eul.params import GateParams

Gates = dict[str, dict[str, Any]]


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing or NaN measurement."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _utility(candidate: Mapping[str, float], production: Mapping[str, float], limit: float):
    new, old = _number(candidate.get("test_acc")), _number(production.get("test_acc"))
    gate: dict[str, Any] = {"candidate_test_acc": new, "production_test_acc": old}
    if new is None or old is None:
        return {**gate, "max_drop": limit, "passed": False, "note": "test accuracy missing"}
    drop = old - new
    # a hair of tolerance: the two accuracies are ratios of the same row count
    return {**gate, "drop": drop, "max_drop": limit, "passed": drop <= limit + 1e-9}


def _with_band(gate: dict[str, Any], value: float, band: Band | None) -> dict[str, Any]:
    """`gate` also held to `band`: its ends are recorded, and a value outside fails it."""
    if band is None:
        return gate
    inside, side = band_verdict(value, band)
    gate = {**gate, "band": band.rounded()}
    if not inside:
        return {**gate, "passed": False, "outside": side}
    return gate


def _mia(
    candidate: Mapping[str, float], forget_rows: int, limit: float, band: Band | None
) -> dict[str, Any]:
    if forget_rows == 0:
        return {"value": None, "max": limit, "passed": True, "note": "no forget rows to measure"}
    value = _number(candidate.get("mia_auc"))
    if value is None:
        return {"value": None, "max": limit, "passed": False, "note": "MIA AUC missing"}
    gate = {"value": value, "max": limit, "passed": value <= limit + 1e-9}
    return _with_band(gate, value, band)


def _forget_band(candidate: Mapping[str, float], forget_rows: int, band: Band) -> dict[str, Any]:
    value = _number(candidate.get("forget_acc"))
    if forget_rows == 0:
        return {"value": value, "passed": True, "note": "no forget rows to measure"}
    if value is None:
        return {"value": None, "band": band.rounded(), "passed": False,
                "note": "forget accuracy missing"}  # fmt: skip
    return _with_band({"value": value, "passed": True}, value, band)


def _forget_vs_test(
    candidate: Mapping[str, float], forget_rows: int, margin: float
) -> dict[str, Any]:
    forget, test = _number(candidate.get("forget_acc")), _number(candidate.get("test_acc"))
    gate: dict[str, Any] = {"forget_acc": forget, "test_acc": test, "margin": margin}
    if forget_rows == 0:
        return {**gate, "passed": True, "note": "no forget rows to measure"}
    if forget is None or test is None:
        return {**gate, "passed": False, "note": "accuracy missing"}
    return {**gate, "passed": forget <= test + margin + 1e-9}


def check_gates(
    candidate: Mapping[str, float],
    production: Mapping[str, float],
    forget_rows: int,
    params: GateParams,
    bands: ReferenceBands | None = None,
) -> Gates:
    """Every gate's measurements, threshold and verdict ({"passed": bool, ...} each).

    `candidate` and `production` are `eul.evaluate.metrics.evaluate` metrics on the same rows;
    `forget_rows` is how many of the batch's rows the forget metrics were measured on;
    `bands`, where drawn (`eul.evaluate.bands.reference_bands`), hold the MIA AUC and the
    forget accuracy to the reference from both sides (`params.two_sided`).
    """
    use = bands if params.two_sided else None
    gates = {
        "utility": _utility(candidate, production, params.max_test_acc_drop),
        "mia_auc": _mia(candidate, forget_rows, params.max_mia_auc, use and use.mia_auc),
        "forget_vs_test": _forget_vs_test(candidate, forget_rows, params.forget_acc_margin),
    }
    if use is not None and use.forget_acc is not None:
        gates["forget_acc"] = _forget_band(candidate, forget_rows, use.forget_acc)
    return gates


def passed(gates: Mapping[str, Mapping[str, Any]]) -> bool:
    """All gates passed; no gate at all is not a pass (nothing was checked)."""
    return bool(gates) and all(gate.get("passed") is True for gate in gates.values())


def _f(value: Any) -> str:
    return "missing" if value is None else f"{value:.3f}"


def gate_details(gate: Mapping[str, Any]) -> str:
    """A gate's measured values and thresholds in one line ("value 0.118, max 0.600")."""
    return ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in gate.items()
        if k != "passed"
    )


def failure_reasons(gates: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per failed gate, for a reviewer (version description and tags)."""
    reasons = []
    for name, gate in gates.items():
        if gate.get("passed") is True:
            continue
        if "note" in gate:
            reasons.append(f"{name}: {gate['note']}")
        elif name == "utility":
            reasons.append(
                f"utility: test accuracy fell {_f(gate.get('drop'))} "
                f"({_f(gate.get('production_test_acc'))} -> {_f(gate.get('candidate_test_acc'))})"
                f", more than the {_f(gate.get('max_drop'))} allowed"
            )
        elif gate.get("outside") in ("above", "below"):
            reasons.append(_band_reason(name, gate))
        elif name == "mia_auc":
            reasons.append(
                f"mia_auc: forget rows are told from held-out rows with AUC "
                f"{_f(gate.get('value'))}, above the {_f(gate.get('max'))} allowed: the rows "
                "are not forgotten"
            )
        elif name == "forget_vs_test":
            reasons.append(
                f"forget_vs_test: forget accuracy {_f(gate.get('forget_acc'))} is above test "
                f"accuracy {_f(gate.get('test_acc'))} + margin {_f(gate.get('margin'))}: the "
                "rows are not forgotten"
            )
        else:
            reasons.append(f"{name}: failed")
    return reasons


_BAND_WORDS = {
    ("mia_auc", "above"): "forget rows are told from held-out rows with AUC {value}, above "
    "what held-out rows of their kind get ({band}): the rows are not forgotten",
    ("mia_auc", "below"): "forget rows look less like training rows (AUC {value}) than "
    "held-out rows of their kind do ({band}): over-forgotten; flipping the score picks "
    "them out at {flipped}",
    ("forget_acc", "above"): "forget accuracy {value} is above what held-out rows of their "
    "kind get ({band}): the rows are not forgotten",
    ("forget_acc", "below"): "forget accuracy {value} is below what held-out rows of their "
    "kind get ({band}): over-forgotten, the model is surer they are wrong than a model "
    "that never saw them would be",
}


def _band_reason(name: str, gate: Mapping[str, Any]) -> str:
    band = gate["band"]
    value = float(gate["value"])
    words = _BAND_WORDS[(name, gate["outside"])]
    text = words.format(
        value=f"{value:.3f}",
        band=f"expected {band['expected']:.3f}, band {band['low']:.3f}-{band['high']:.3f}",
        flipped=f"{1 - value:.3f}",
    )
    return f"{name}: {text}"


def gate_bands(
    gates: Mapping[str, Mapping[str, Any]],
) -> dict[str, tuple[float | None, float | None]]:
    """Where each gated metric of the candidate must fall, as {metric: (low, high)} on the
    metric's own scale: the lines a plot of the batch draws. Gates without a measured
    threshold (no forget rows, a missing value) give no line."""
    bands: dict[str, tuple[float | None, float | None]] = {}
    utility = gates.get("utility") or {}
    old, drop = _number(utility.get("production_test_acc")), _number(utility.get("max_drop"))
    if old is not None and drop is not None:
        bands["test_acc"] = (old - drop, None)
    mia = gates.get("mia_auc") or {}
    if _number(mia.get("value")) is not None and _number(mia.get("max")) is not None:
        bands["mia_auc"] = _narrowed((None, float(mia["max"])), mia.get("band"))
    forget = gates.get("forget_vs_test") or {}
    test, margin = _number(forget.get("test_acc")), _number(forget.get("margin"))
    if "note" not in forget and test is not None and margin is not None:
        band = (gates.get("forget_acc") or {}).get("band")
        bands["forget_acc"] = _narrowed((None, test + margin), band)
    return bands


def _narrowed(
    limits: tuple[float | None, float | None], band: Mapping[str, Any] | None
) -> tuple[float | None, float | None]:
    """A gate's fixed limits narrowed to its reference band, where it has one."""
    if not band:
        return limits
    low = float(band["low"]) if band.get("two_sided", True) else limits[0]
    high = float(band["high"]) if limits[1] is None else min(limits[1], float(band["high"]))
    return low, high
