"""URLs as they may be shown: a tracking or database URL may carry `user:password@` (or a
token as `token@`), and no message, log line or report prints it."""

from __future__ import annotations

import re

_USER_PASSWORD = re.compile(r"//([^/@:]*):[^/@]*@")
_TOKEN = re.compile(r"//[^/@:]+@")


def shown_url(url: str) -> str:
    """`url` with the password of a `user:password@` part, or a bare `token@`, as `***`."""
    return _TOKEN.sub("//***@", _USER_PASSWORD.sub(r"//\1:***@", url))
