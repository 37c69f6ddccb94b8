"""Which code ran: the commit of the checkout the `eul` package sits in, for the runs and
results that say where they came from."""

from __future__ import annotations

import subprocess
from pathlib import Path

# The checkout this package sits in (an installed copy has none: "unknown").
REPO = Path(__file__).resolve().parents[2]
UNKNOWN = "unknown"


def git_commit(repo: str | Path = REPO) -> str:
    """The commit checked out at `repo`, or "unknown" (no git, or not a checkout)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else UNKNOWN
