"""Serve the four flows as deployments from this process, without a work pool or worker:

    python -m flows.serve            # then, from another shell:
    prefect deployment run 'nightly-deletion-batch/nightly'

The deployments match prefect.yaml's (names, schedules, parameters); flow runs execute in
subprocesses of this one, in the current folder (the project root).
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve

from flows.compact import compact
from flows.nightly import nightly_deletion_batch
from flows.promote import promote_version
from flows.unlearn_request import unlearn_request

NIGHTLY_CRON = "0 2 * * *"
COMPACT_CRON = "0 4 * * 0"


def deployments(project_dir: str = ".", schedules: bool = True) -> list:
    """The four deployments, for the project at `project_dir` (made absolute)."""
    project = str(Path(project_dir).resolve())
    parameters = {"project_dir": project}
    return [
        nightly_deletion_batch.to_deployment(
            name="nightly", cron=NIGHTLY_CRON if schedules else None, parameters=parameters
        ),
        unlearn_request.to_deployment(name="urgent", parameters=parameters),
        promote_version.to_deployment(name="review", parameters=parameters),
        compact.to_deployment(
            name="weekly", cron=COMPACT_CRON if schedules else None, parameters=parameters
        ),
    ]


if __name__ == "__main__":
    serve(*deployments())
