"""`eul doctor`: is this project set up to run? One check per store the pipeline needs.

Each check is a plain function that returns `Check` results (OK, FAIL with the fix, or SKIP
when there is nothing to check); `run_doctor` runs them in order and hands each result to a
callback as soon as it is known, so that slow checks (loading a model) show progress.

Checks only read: a missing SQLite file or local remote folder is reported as "created on
first use", not created. Credentials are reported as set or not set, never shown; error
text from a store has every known secret replaced by ***.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.pipeline.probes import SQLITE_PREFIX, TIMEOUT_S, http_problem, mlflow_problem
from eul.pipeline.probes import creatable as _creatable
from eul.pipeline.probes import first_line as _first_line
from eul.runtime.environment import environment
from eul.runtime.urls import redacted

if TYPE_CHECKING:
    from eul.params import Params
    from eul.pipeline.context import Context

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"
# A finding that does not stop the pipeline but should not last (a failure drill left set).
WARN = "WARN"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report: what was checked, what was found, and the fix."""

    name: str
    status: str
    detail: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def line(self, width: int = 16) -> str:
        fix = f"; fix: {self.hint}" if self.hint else ""
        return f"{self.status:<4}  {self.name:<{width}}  {self.detail}{fix}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def prefect_api_url() -> tuple[str | None, str | None]:
    """Prefect's API URL and key: PREFECT_API_URL and PREFECT_API_KEY when set, else as
    Prefect resolves them (the active profile, a test harness); None when there is none."""
    url, key = os.environ.get("PREFECT_API_URL"), os.environ.get("PREFECT_API_KEY")
    if url:
        return url, key
    try:
        from prefect.settings import get_current_settings
    except ImportError:
        return None, None
    settings = get_current_settings()
    if key is None and settings.api.key is not None:
        key = settings.api.key.get_secret_value()
    return settings.api.url or None, key


# -- the checks ---------------------------------------------------------------------------


def check_params(root: Path, params_file: str) -> tuple[Check, Params | None]:
    """params.yaml loads, with known keys and values in range."""
    from eul.params import DEFAULT_PATH, Params, ParamsError, load_params

    name = "params"
    if not root.is_dir():
        check = Check(
            name, FAIL, f"no project folder at {root}", "run in the project or pass --project"
        )
        return check, None
    path = root / params_file
    if not path.is_file():
        if params_file == DEFAULT_PATH:
            return Check(name, OK, f"no {params_file}: the built-in defaults apply"), Params()
        return Check(name, FAIL, f"no params file at {path}", "check --params"), None
    try:
        params = load_params(path)
    except ParamsError as err:
        hint = "correct or remove the key; the project's params.yaml lists every known key"
        return Check(name, FAIL, str(err), hint), None
    return Check(name, OK, f"{path} loads; every key is known"), params


def check_drill(ctx: Context) -> Check | None:
    """A failure drill (`pipeline.drill_fail_at`) set makes every batch stop on purpose, a
    kill drill ($EUL_DRILL_KILL) kill it: a WARN while one is set, nothing otherwise."""
    import os

    from eul.pipeline.context import KILL_ENV

    point = ctx.drill_fail_at
    if os.environ.get(KILL_ENV, "").strip():
        return Check(
            "failure drill",
            WARN,
            f"{KILL_ENV} is set: a batch reaching its drill point kills itself (SIGKILL)",
            f"unset {KILL_ENV} (production must leave it unset)",
        )
    if point is None:
        return None
    return Check(
        "failure drill",
        WARN,
        f"pipeline.drill_fail_at is {point!r}: every batch stops there on purpose",
        "set pipeline.drill_fail_at: null in params.yaml (production must leave it null)",
    )


def check_log(ctx: Context) -> Check:
    """The deletion log opens and its hash chain verifies."""
    from eul.stores.log.schema import LedgerError
    from eul.stores.log.store import Ledger

    name = "deletion log"
    url = ctx.log_url
    if url.startswith(SQLITE_PREFIX) and ":memory:" not in url:
        path = Path(url[len(SQLITE_PREFIX) :])
        if not path.exists():
            if _creatable(path):
                return Check(name, OK, f"no log yet at {path} (made by the first request)")
            return Check(name, FAIL, f"cannot create {path}", "set log.url or $EUL_LOG_URL")
    try:
        with Ledger(url, params_path=ctx.params_path) as ledger:
            report = ledger.verify()
            shown = ledger.url
    except LedgerError as err:
        return Check(name, FAIL, str(err), "check log.url in params.yaml or $EUL_LOG_URL")
    if not report.ok:
        return Check(
            name,
            FAIL,
            f"{shown}: chain broken at entry {report.broken_seq}: {report.reason}",
            "the log was changed outside eul; restore it from a backup, then `eul requests verify`",
        )
    entries = f"{report.entries} entr{'y' if report.entries == 1 else 'ies'}"
    return Check(name, OK, f"{shown}: {entries}, hash chain verifies (head {report.head_seq})")


def check_mlflow(ctx: Context) -> tuple[Check, int | None]:
    """The tracking store answers; returns the production version, if any."""
    from eul.stores.registry.versions import PRODUCTION, get_alias_version

    name = "mlflow"
    uri = ctx.settings.tracking_uri
    shown = ctx.settings.shown_uri
    problem = mlflow_problem(uri)
    if problem:
        return Check(name, FAIL, *problem), None
    if uri.startswith(SQLITE_PREFIX) and not Path(uri[len(SQLITE_PREFIX) :]).exists():
        return Check(name, OK, f"no store yet at {shown} (made by the first run)"), None
    try:
        with _quiet_mlflow():
            version = get_alias_version(ctx.settings, PRODUCTION)
    except Exception as err:  # noqa: BLE001 - any failure of the store is the finding
        hint = "check MLFLOW_TRACKING_URI or registry.tracking_uri"
        return Check(name, FAIL, f"{shown}: {_first_line(err)}", hint), None
    where = f"model {ctx.settings.model_name!r}"
    found = f"production is version {version}" if version else "no production version yet"
    return Check(name, OK, f"{shown} answers; {where}: {found}"), version


def _quiet_mlflow() -> AbstractContextManager[None]:
    """No retries for minutes and no progress bars while the doctor asks MLflow."""
    return environment(_MLFLOW_QUIET)


_MLFLOW_QUIET = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(TIMEOUT_S * 2)),
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def check_prefect() -> Check:
    """The Prefect API answers, when one is configured."""
    name = "prefect"
    url, key = prefect_api_url()
    if not url:
        return Check(name, SKIP, "PREFECT_API_URL is not set: flows start a temporary server")
    problem = http_problem(url.rstrip("/") + "/health", token=key)
    if problem:
        hint = "run `prefect server start` or fix PREFECT_API_URL (`prefect config view`)"
        return Check(name, FAIL, f"the API at {url} {problem}", hint)
    return Check(name, OK, f"the API at {url} answers")


def check_dvc(root: Path) -> list[Check]:
    """A DVC repository, and every configured remote reachable (with credentials for S3)."""
    from eul.stores.dvc import dvcstore

    if not (root / ".dvc").is_dir():
        hint = "run `git init && dvc init` in the project (a clone has it already)"
        return [Check("dvc", FAIL, f"{root} is not a DVC repository (no .dvc/)", hint)]
    try:
        config = dict(dvcstore._merged_config(root)["remote"])
        default = dvcstore.default_remote(root)
    except Exception as err:  # noqa: BLE001 - DVC's own config error is the finding
        return [Check("dvc", FAIL, f".dvc/config: {_first_line(err)}", "fix .dvc/config")]
    if not config:
        detail = f"repository at {root}; no remote configured (data stays in the local cache)"
        return [Check("dvc", OK, detail)]
    checks = [Check("dvc", OK, f"repository at {root}; default remote {default or '(none)'}")]
    for remote, section in config.items():
        check = _check_remote(remote, dict(section))
        checks.append(
            Check(check.name, check.status, redacted(check.detail, root=root), check.hint)
        )
    return checks


def _check_remote(remote: str, section: Mapping[str, Any]) -> Check:
    name = f"remote {remote}"
    url = str(section.get("url", ""))
    if url.startswith("s3://"):
        return _check_s3_remote(name, url, section)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        return Check(name, SKIP, f"{url}: {scheme} remotes are not checked; `dvc push` tells")
    path = Path(url)
    if path.is_dir():
        writable = os.access(path, os.W_OK | os.X_OK)
        if writable:
            return Check(name, OK, f"folder {path}")
        return Check(name, FAIL, f"folder {path} is not writable", "fix its permissions")
    if not path.exists() and _creatable(path):
        return Check(name, OK, f"folder {path} (made by the first `dvc push`)")
    return Check(name, FAIL, f"cannot use {path} as a folder", "`dvc remote modify` its url")


def _s3_credentials(section: Mapping[str, Any]) -> str | None:
    """Where an S3 remote's keys come from, in the order DVC looks; None: nowhere."""
    if section.get("access_key_id") and section.get("secret_access_key"):
        return "from the DVC config"
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return "from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    import boto3

    profile = section.get("profile")
    try:
        found = boto3.Session(profile_name=profile).get_credentials()
    except Exception:  # noqa: BLE001 - an unknown profile means no credentials
        found = None
    return f"from the AWS profile {profile or 'default'}" if found is not None else None


def _check_s3_remote(name: str, url: str, section: Mapping[str, Any]) -> Check:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    source = _s3_credentials(section)
    if source is None:
        return Check(
            name,
            FAIL,
            f"{url}: credentials not set",
            "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or store them for this "
            "checkout with `eul data remote NAME URL --store-credentials`",
        )
    bucket, _, prefix = url[len("s3://") :].partition("/")
    client = boto3.Session(profile_name=section.get("profile")).client(
        "s3",
        endpoint_url=section.get("endpointurl"),
        region_name=section.get("region"),
        aws_access_key_id=section.get("access_key_id"),
        aws_secret_access_key=section.get("secret_access_key"),
        aws_session_token=section.get("session_token"),
        config=Config(
            connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"max_attempts": 1}
        ),
    )
    where = url + (f" at {section['endpointurl']}" if section.get("endpointurl") else "")
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        hint = "check the bucket name and that the keys may list it"
        return Check(name, FAIL, f"{where}: refused ({code}); credentials set ({source})", hint)
    except BotoCoreError as err:
        hint = "check the endpoint (`dvc remote modify NAME endpointurl URL`) and the network"
        return Check(name, FAIL, f"{where}: {_first_line(err)}", hint)
    return Check(name, OK, f"{where} answers; credentials set ({source})")


def check_base_model(ctx: Context) -> Check:
    """The base model of the `train` stage loads."""
    from eul.model.text_model import ModelError, TextModel

    name = "base model"
    folder = ctx.root / ctx.params.train.out
    if not (folder / "config.json").is_file():
        hint = "run `dvc repro train` (or `eul stage prepare && eul stage train`)"
        return Check(name, FAIL, f"no model at {folder}", hint)
    try:
        model = TextModel.load(folder)
    except ModelError as err:
        return Check(name, FAIL, str(err), "rebuild it with `dvc repro train`")
    size = sum(p.numel() for p in model.model.parameters())
    return Check(name, OK, f"{folder} loads ({model.model.config.model_type}, {size:,} parameters)")


def check_production(ctx: Context, version: int | None, mlflow_ok: bool) -> Check:
    """The production version from the registry loads, with its fused layer."""
    from eul.stores.registry.loading import load_version
    from eul.stores.registry.tags import covered_request_ids
    from eul.stores.registry.versions import version_tags

    name = "production model"
    if not mlflow_ok:
        return Check(name, SKIP, "MLflow is not reachable")
    if version is None:
        return Check(name, SKIP, "no production version yet: the base model serves")
    try:
        with _quiet_mlflow():
            model = load_version(ctx.settings, version)
            covered = covered_request_ids(version_tags(ctx.settings, version))
    except Exception as err:  # noqa: BLE001 - any failure to load is the finding
        hint = "check the artifact store (EUL_MLFLOW_ARTIFACTS, S3 credentials)"
        return Check(name, FAIL, f"version {version}: {_first_line(err)}", hint)
    layers = ", ".join(model.unlearning_layers().active) or "none"
    return Check(
        name,
        OK,
        f"version {version} loads (active layers: {layers}; {len(covered)} requests honoured)",
    )


def run_doctor(
    project_dir: str | Path = ".",
    params_file: str = "params.yaml",
    report: Callable[[Check], None] | None = None,
    models: bool = True,
) -> list[Check]:
    """Every check in order; `report` gets each result as soon as it is known.

    Checks that need params.yaml are skipped when it does not load; `models=False` skips
    loading the base and production models (the slow part).
    """
    root = Path(project_dir).resolve()
    results: list[Check] = []

    def add(check: Check) -> None:
        results.append(check)
        if report is not None:
            report(check)

    params_check, params = check_params(root, params_file)
    add(params_check)
    ctx: Context | None = None
    mlflow_check, version = Check("mlflow", SKIP, "params.yaml must load first"), None
    if params is not None:
        from eul.pipeline.context import load_context

        ctx = load_context(root, params_file)
    if ctx is None:
        add(Check("deletion log", SKIP, "params.yaml must load first"))
        add(mlflow_check)
    else:
        drill = check_drill(ctx)
        if drill is not None:
            add(drill)
        add(check_log(ctx))
        mlflow_check, version = check_mlflow(ctx)
        add(mlflow_check)
    add(check_prefect())
    for check in check_dvc(root) if root.is_dir() else []:
        add(check)
    if ctx is None or not models:
        why = "params.yaml must load first" if ctx is None else "not asked (--no-models)"
        add(Check("base model", SKIP, why))
        add(Check("production model", SKIP, why))
    else:
        add(check_base_model(ctx))
        add(check_production(ctx, version, not mlflow_check.failed))
    return results
