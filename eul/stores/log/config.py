"""Where the deletion log lives and how long a request may take: an argument, else the
environment (the URL only), else the ``log`` section of params.yaml, else the defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eul.stores.log.schema import LedgerError

DEFAULT_URL = "sqlite:///state/deletion-log.sqlite"
DEFAULT_DEADLINE_DAYS = 30
DEFAULT_ERASURE_DAYS = 30
URL_ENV = "EUL_LOG_URL"


def _read_params_log(params_path: str | Path) -> dict[str, Any]:
    """The ``log`` section of params.yaml, or {} when the file is absent."""
    path = Path(params_path)
    if not path.is_file():
        return {}
    import yaml

    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise LedgerError(f"cannot read {path}: {first}; fix the YAML") from err
    if not isinstance(params, dict):
        raise LedgerError(f"{path} must hold a mapping at the top level")
    section = params.get("log") or {}
    if not isinstance(section, dict):
        raise LedgerError(
            f"`log` in {path} must be a mapping with `url`, `deadline_days` and `erasure_days`"
        )
    return section


def resolve_url(url: str | None = None, params_path: str | Path = "params.yaml") -> str:
    """The log's database URL: argument, else $EUL_LOG_URL, else log.url in params.yaml,
    else the embedded SQLite file ``state/deletion-log.sqlite``."""
    if url:
        return url
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    configured = _read_params_log(params_path).get("url")
    if configured:
        return str(configured)
    return DEFAULT_URL


def _days(name: str, days: int | None, default: int, params_path: str | Path) -> int:
    value: Any = days
    if value is None:
        value = _read_params_log(params_path).get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 36_500:
        raise LedgerError(f"{name} must be a whole number of days, 1 to 36500, not {value!r:.20}")
    return value


def resolve_deadline_days(days: int | None = None, params_path: str | Path = "params.yaml") -> int:
    """Days a request may take: argument, else log.deadline_days in params.yaml, else 30."""
    return _days("deadline_days", days, DEFAULT_DEADLINE_DAYS, params_path)


def resolve_erasure_days(days: int | None = None, params_path: str | Path = "params.yaml") -> int:
    """Days a request may take to be erased: argument, else log.erasure_days in params.yaml,
    else 30 (counted from submission, like the deadline)."""
    return _days("erasure_days", days, DEFAULT_ERASURE_DAYS, params_path)
