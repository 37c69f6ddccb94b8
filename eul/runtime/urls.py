"""Text as it may be shown: a tracking or database URL may carry `user:password@` (or a
token as `token@`), and S3 or service credentials may sit in the environment or in DVC's
`config.local`; no message, log line, tag or report prints any of them. Every place that
shows text built from a store's answer goes through :func:`redacted` (or :func:`shown_url`
for one URL)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

REDACTED = "***"
_USER_PASSWORD = re.compile(r"//([^/@:\s]*):[^/@\s]*@")
_TOKEN = re.compile(r"//[^/@:\s]+@")
# Variables whose values are credentials (S3 keys, service passwords and tokens).
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "PGPASSWORD",
    "PREFECT_API_KEY",
)
# Options of DVC's config.local whose values are credentials.
SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token", "password")
# Shorter values are not replaced: they would blank out ordinary words.
_MIN_SECRET = 4


def shown_url(url: str) -> str:
    """`url` with the password of a `user:password@` part, or a bare `token@`, as `***`."""
    return _TOKEN.sub("//***@", _USER_PASSWORD.sub(r"//\1:***@", url))


def known_secrets(root: str | Path | None = None) -> list[str]:
    """Credential values this project could print: the `SECRET_ENV` variables and, under a
    project `root`, the credential options of `.dvc/config.local`."""
    found = [os.environ.get(name, "") for name in SECRET_ENV]
    local = Path(root) / ".dvc" / "config.local" if root is not None else None
    if local is not None and local.is_file():
        for line in local.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() in SECRET_OPTIONS:
                found.append(value.strip())
    return [s for s in found if len(s) >= _MIN_SECRET]


def redacted(text: str, secrets: Sequence[str] = (), root: str | Path | None = None) -> str:
    """`text` with every URL's password and every known credential (`secrets`, then
    :func:`known_secrets`) replaced by `***`."""
    for secret in sorted({*secrets, *known_secrets(root)}, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET:
            text = text.replace(secret, REDACTED)
    return shown_url(text)
