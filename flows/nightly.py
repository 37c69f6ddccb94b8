"""`nightly-deletion-batch`: every validated deletion request since the last batch becomes an
unlearning layer; the layers are fused with the production model's, evaluated, registered,
gated, promoted (or left for a reviewer) and, once deployed, purged from the data."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.batch import model_slot, open_project, run_batch

NAME = "nightly-deletion-batch"


@flow(name=NAME, task_runner=ThreadPoolTaskRunner(max_workers=8))
def nightly_deletion_batch(
    project_dir: str = ".",
    params_file: str = "params.yaml",
    auto_promote: bool | None = None,
) -> dict[str, Any]:
    """Run the deletion batch of the project at `project_dir`.

    auto_promote: None follows `pipeline.auto_promote` in params.yaml; False leaves a
    passing candidate for the `promote` flow.
    """
    ctx = open_project(project_dir, params_file)
    with model_slot():
        return run_batch(ctx, "nightly", NAME, auto_promote=auto_promote)


if __name__ == "__main__":
    nightly_deletion_batch()
