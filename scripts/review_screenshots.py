"""Screenshots of what a reviewer sees, for docs/: the MLflow version page of the production
version and the report of the last nightly flow run in the Prefect UI.

    make demo                                  # once: a project with a promoted version
    python scripts/review_screenshots.py       # --project demo --out docs/images

It starts an `mlflow server` on the project's registry and a Prefect server on the demo's
Prefect database (both on free loopback ports, stopped at the end), and takes each page in
headless Chromium (Debian's `chromium` package, or `--chromium PATH`). Not part of `make
test`: it needs a browser and a finished demo.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Run from a checkout without installing it: the repository root holds the `eul` package.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eul.cli.demo_prefect import prefect_database_url  # noqa: E402
from eul.cli.demo_project import PREFECT_DIR  # noqa: E402
from eul.pipeline.context import load_context  # noqa: E402
from eul.runtime.servers import answers, free_port, start_prefect_server, stop, wait_until_up  # noqa: E402
from eul.stores.registry.versions import PRODUCTION, get_alias_version  # noqa: E402

NIGHTLY = "nightly-deletion-batch"


def _mlflow_server(tracking_uri: str, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_up(server, lambda: answers(f"{url}/health"), 120, "the mlflow server", 0.3)
    return server, url


def _last_report_url(api: str) -> str:
    """The UI page of the report artifact of the last nightly flow run."""
    import httpx

    ui = api.removesuffix("/api")
    runs = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"name": {"like_": NIGHTLY[:7]}}, "sort": "START_TIME_DESC"},
        timeout=30,
    ).json()
    for run in runs:
        artifacts = httpx.post(
            f"{api}/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [run["id"]]}, "type": {"any_": ["markdown"]}}
            },
            timeout=30,
        ).json()
        if artifacts:
            return f"{ui}/artifacts/artifact/{artifacts[0]['id']}"
    raise SystemExit("no nightly flow run with a report: run `make demo` first")


def _screenshot(chromium: str, url: str, path: Path, height: int) -> None:
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size=1400,{height}", "--virtual-time-budget=20000",
         f"--screenshot={path}", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    print(f"wrote {path} ({url})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="demo", help="the demo's project folder")
    parser.add_argument("--out", default="docs/images", help="where the PNGs go")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args(argv)
    project = Path(args.project).resolve()
    if not (project / "params.yaml").is_file():
        raise SystemExit(f"no project at {project}: run `make demo` first")
    ctx = load_context(project)
    version = get_alias_version(ctx.settings, PRODUCTION)
    if version is None:
        raise SystemExit("no version in production: run `make demo` first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = project / PREFECT_DIR
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home),
           "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database_url(home),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    with (out / ".servers.log").open("w") as log:
        mlflow, mlflow_url = _mlflow_server(ctx.settings.tracking_uri, log)
        prefect = start_prefect_server(env, log, port)
        try:
            page = f"{mlflow_url}/#/models/{ctx.settings.model_name}/versions/{version}"
            _screenshot(args.chromium, page, out / "review-mlflow-version.png", 2200)
            report = _last_report_url(env["PREFECT_API_URL"])
            _screenshot(args.chromium, report, out / "review-prefect-report.png", 2000)
        finally:
            stop(prefect)
            stop(mlflow, timeout_s=10)
    (out / ".servers.log").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
