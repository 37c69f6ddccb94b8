"""The kill drill: with $EUL_DRILL_KILL set, a drill point ends its process by SIGKILL (no
cleanup runs, as after a power cut); without it, the drill raises as before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import eul

REPO = Path(eul.__file__).resolve().parents[1]

CALLER = """
import sys
from eul.pipeline.context import PipelineError, fail_point, load_context
ctx = load_context(sys.argv[1])
try:
    fail_point(ctx, sys.argv[2])
except PipelineError as err:
    print("raised:", err)
    sys.exit(3)
print("passed")
"""


def _call(project: Path, point: str, kill: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EUL_DRILL_KILL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if kill is not None:
        env["EUL_DRILL_KILL"] = kill
    return subprocess.run(
        [sys.executable, "-c", CALLER, str(project), point],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "drill, kill, point, outcome",
    [
        ("after-register", "1", "after-register", "killed"),
        ("after-register", "1", "before-alias", "passed"),
        ("after-register", None, "after-register", "raised"),
        (None, "before-alias", "before-alias", "killed"),
        (None, "before-alias", "after-promote", "passed"),
        (None, "1", "after-register", "passed"),
    ],
)
def test_a_kill_drill_ends_the_process_at_its_point_only(tmp_path, drill, kill, point, outcome):
    # given params.yaml's drill point (or none) and $EUL_DRILL_KILL (unset, 1 or a point)
    value = "null" if drill is None else drill
    (tmp_path / "params.yaml").write_text(f"pipeline:\n  drill_fail_at: {value}\n")
    # when a process reaches `point`
    proc = _call(tmp_path, point, kill)
    # then it is killed there (SIGKILL: nothing printed after), raises, or passes on
    if outcome == "killed":
        assert proc.returncode == -signal.SIGKILL and proc.stdout == ""
    elif outcome == "raised":
        assert proc.returncode == 3 and "failure injected at 'after-register'" in proc.stdout
    else:
        assert proc.returncode == 0 and proc.stdout.strip() == "passed", proc.stderr[-2000:]
