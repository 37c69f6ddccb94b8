"""`unlearn-request`: one deletion request now, for urgent cases, through the same steps as
the nightly batch (its layer fused with production's, gated, registered, promoted, purged)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from eul.pipeline.checks import check_request_id
from flows.batch import model_slot, open_project, run_batch

NAME = "unlearn-request"


@flow(name=NAME, flow_run_name="unlearn-{request_id}")
def unlearn_request(
    request_id: str,
    project_dir: str = ".",
    params_file: str = "params.yaml",
    auto_promote: bool | None = None,
) -> dict[str, Any]:
    """Unlearn `request_id` (received or validated in the log) right away.

    A request the production model already honours, or one that was rejected, is left as it
    is; the summary's `not_pending` says so.
    """
    ctx = open_project(project_dir, params_file)
    check_request_id(ctx, request_id)  # an id that is not in the log is an error, not a no-op
    with model_slot():
        return run_batch(ctx, "request", NAME, only=[request_id], auto_promote=auto_promote)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m flows.unlearn_request REQUEST_ID")
    unlearn_request(sys.argv[1])
