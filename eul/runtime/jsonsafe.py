"""Values made fit for JSON: NaN (a float JSON has no word for) becomes null, at any depth.
Results, reports and MLflow documents all go through it before they are written."""

from __future__ import annotations

import math
from typing import Any


def clean_json(value: Any) -> Any:
    """NaN is not JSON: null instead (nested dicts, lists and tuples; tuples become lists)."""
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
