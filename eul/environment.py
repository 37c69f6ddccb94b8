"""Environment variables set for a block and put back after it.

Some tools read their settings only from the environment (dvc, MLflow's S3 endpoint and
retries), so a step that needs other values sets them for its own block and restores them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


def restore(saved: Mapping[str, str | None]) -> None:
    """Put variables back as `saved` holds them (None: the variable was not set)."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set for the block, then every one put back as it was."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        restore(saved)
