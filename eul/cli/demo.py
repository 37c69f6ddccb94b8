"""`eul demo`: the whole deletion pipeline on one machine, in a folder of its own.

The steps, each with a `== N/8` header:

1. project: a git + DVC project (local-folder remote) holding this checkout's params.yaml,
   dvc.yaml, prefect.yaml and code, so the repository's own files are never touched;
2. data: the embedded synthetic data set (`eul data init`), tracked by data.dvc;
3. dvc repro: prepare (split by subject, tokenizer), train the base model, partition;
4. requests: three subjects of the training data and one subject that does not exist;
5. nightly batch: the `nightly-deletion-batch` flow validates (the bad request is rejected
   with its reason), trains one layer per request, fuses, evaluates, gates and registers a
   `candidate` in MLflow, left for review;
6. promote: the `promote` flow, the demo playing the reviewer, moves `production`;
7. purge: the deployed requests' rows leave the data, the DVC cache and the remote;
8. audit: `eul audit`, whose exit status is the demo's.

A summary then says what happened and where to look. Each step first looks at what is
there, so a second run repeats no work: the project, data, base model and requests are
reused (submission is idempotent by request id), and the flows run only when the log has
pending requests or a candidate awaits promotion. The flows run in this process against a
Prefect server on a SQLite database inside the demo folder, started only when a flow has to
run, so that `prefect server start` (the command the summary prints) shows the runs later.

Only ids, counts, hashes and metrics are printed: never the text of a row being forgotten.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from eul.pipeline.context import Context, load_context
from eul.pipeline.gates import gate_details
from eul.runtime.environment import environment, tool_variables
from eul.runtime.servers import free_port

REPO = Path(__file__).resolve().parents[2]
# What the demo project copies from the checkout: the DVC stages depend on eul/, and with
# flows/, tasks/ and prefect.yaml the folder is a whole project (`python -m flows.serve`).
PROJECT_DIRS = ("eul", "flows", "tasks")
# dvc.yaml last: with it and .dvc/ in place, the folder counts as made
PROJECT_FILES = ("prefect.yaml", ".gitignore", "dvc.yaml")
REQUESTS_FILE = "requests.jsonl"
PREFECT_DIR = ".prefect"
REVIEWER = "demo"
VALID_REQUESTS = 3
NOBODY = "s9999"
# dvc's advice after a run, which the demo takes care of or does not need
DVC_HINTS = (
    "To track the changes",
    "git add ",
    "To enable auto staging",
    "dvc config ",
    "Use `dvc push`",
)
PENDING = ("received", "validated", "unlearned", "fused")
SHOWN_METRICS = ("test_acc", "retained_acc", "forget_acc", "forget_memorised_acc", "mia_auc")


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


def tool_environment() -> AbstractContextManager[None]:
    """`tool_variables` set for the block (the pipeline runs `dvc` too), then restored."""
    return environment(tool_variables())


def shown(path: Path) -> str:
    """`path` relative to the working directory when inside it (shorter to read)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def local_path(uri: str) -> Path | None:
    """The file behind a `sqlite:///` or `file://` URI, or a plain path; None for a server."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return None if "://" in uri else Path(uri)


def choose_subjects(train_file: Path, n: int, task: str) -> list[str]:
    """`n` subjects of the training split with at least three rows, in id order: the first
    one with a memorised row (a flipped label learnt by heart, which forgetting must undo),
    then ones without. Deterministic, so the demo always asks for the same people."""
    from eul.data.records import load_records

    rows: dict[str, list[bool]] = {}
    for record in load_records(train_file, task=task):
        rows.setdefault(record.subject_id, []).append(record.memorised)
    subjects = sorted(s for s, flags in rows.items() if len(flags) >= 3) or sorted(rows)
    memorised = [s for s in subjects if any(rows[s])][:1]
    chosen = memorised + [s for s in subjects if s not in memorised][: n - len(memorised)]
    if len(chosen) < n:
        raise DemoError(f"{train_file} has only {len(chosen)} subjects; the demo asks for {n}")
    return chosen


# -- Prefect ---------------------------------------------------------------------------------


def run_shown(
    command: list[str], cwd: Path, echo: Callable[[str], None], every_s: float = 30.0
) -> int:
    """Run `command`, echoing its output as it comes (less dvc's advice) and, while it is
    silent (a stage training a model), a line every `every_s` seconds; returns its status."""
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    started = time.monotonic()
    last_output = started
    stage = "?"

    def relay() -> None:
        nonlocal last_output, stage
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.strip()
            if text and not text.startswith(DVC_HINTS):
                echo(f"   | {line.rstrip()}")
                last_output = time.monotonic()
                if text.startswith("Running stage "):
                    stage = text.removeprefix("Running stage ").rstrip(":")

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    while proc.poll() is None:
        reader.join(timeout=min(1.0, every_s))
        now = time.monotonic()
        if now - last_output >= every_s:
            echo(f"   ... stage {stage} still running ({now - started:.0f} s so far)")
            last_output = now
    reader.join()
    return proc.returncode


def prefect_database_url(home: Path) -> str:
    return f"sqlite+aiosqlite:///{home / 'prefect.db'}"


@contextmanager
def local_prefect(home: Path) -> Iterator[str]:
    """A Prefect server on the SQLite database in `home`, for the flows run inside the block
    in this process; yields its API URL. Made the way Prefect's own test harness makes its
    server, except that the database stays, for `prefect server start` to show later."""
    import prefect.context
    import prefect.settings
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    home.mkdir(parents=True, exist_ok=True)
    database = {
        prefect.settings.PREFECT_HOME: str(home),
        prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: prefect_database_url(home),
        prefect.settings.PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    with prefect.settings.temporary_settings(updates=database):
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=120)
        try:
            with (
                prefect.settings.temporary_settings(
                    updates={prefect.settings.PREFECT_API_URL: server.api_url}
                ),
                # threads without a settings context of their own (Prefect's log and event
                # workers) read the process-global one: point it at this server too
                prefect.context._temporary_global_settings_context(
                    prefect.context.get_settings_context()
                ),
            ):
                yield server.api_url
                # the runs' last logs and events reach the server before it stops
                with contextlib.suppress(RuntimeError):
                    APILogWorker.instance().drain()
                EventsWorker.drain_all()
        finally:
            server.stop()


def create_global_limit(name: str, limit: int) -> None:
    """`prefect global-concurrency-limit create NAME --limit LIMIT`, unless it exists (the
    flows that move the production alias hold `eul-model`, as prefect.yaml sets up)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


# -- the demo ------------------------------------------------------------------------------


class Demo:
    """The demo's steps on the project folder `root`; `echo` prints one line."""

    def __init__(
        self,
        root: str | Path,
        params_file: str | Path | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.params_file = Path(params_file) if params_file else REPO / "params.yaml"
        self.echo = echo or (lambda line: print(line, flush=True))
        self.audit_code: int | None = None
        self.ran_flows: list[str] = []
        self.seconds: dict[str, float] = {}
        self._prefect: contextlib.ExitStack | None = None

    # -- running --

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("project folder (git + DVC)", self.make_project),
            ("embedded data set (eul data init, data.dvc)", self.make_data),
            ("dvc repro: prepare the data, train the base model", self.repro),
            ("deletion requests", self.submit_requests),
            ("nightly deletion batch (Prefect flow)", self.nightly_batch),
            ("promote the candidate (Prefect flow, reviewer demo)", self.promote),
            ("purge the forgotten rows (data, DVC cache, remote)", self.purge),
            ("audit (eul audit)", self.audit),
        ]

    def run(self) -> int:
        """Every step, then the summary; returns the audit's exit status."""
        started = time.perf_counter()
        steps = self.steps()
        with tool_environment():
            try:
                for number, (title, step) in enumerate(steps, start=1):
                    self.echo(f"\n== {number}/{len(steps)} {title}")
                    step_started = time.perf_counter()
                    step()
                    self.seconds[step.__name__] = time.perf_counter() - step_started
            finally:
                self.stop_prefect()
        self.summary(time.perf_counter() - started)
        return int(self.audit_code or 0)

    def context(self) -> Context:
        return load_context(self.root)

    def prefect_home(self) -> Path:
        return self.root / PREFECT_DIR

    def start_prefect(self) -> None:
        """The local Prefect server, started at the first flow of this run."""
        if self._prefect is not None:
            return
        self.echo(f"   starting a Prefect server on {shown(self.prefect_home() / 'prefect.db')}")
        stack = contextlib.ExitStack()
        api = stack.enter_context(local_prefect(self.prefect_home()))
        self._prefect = stack
        from eul.pipeline.context import MODEL_LIMIT

        create_global_limit(MODEL_LIMIT, 1)
        self.echo(f"   Prefect API at {api} (stopped when the demo ends)")

    def stop_prefect(self) -> None:
        if self._prefect is not None:
            stack, self._prefect = self._prefect, None
            stack.close()

    # -- 1. project --

    def make_project(self) -> None:
        """A git + DVC project with a copy of the checkout's code and pipeline files."""
        from eul.stores.dvc import dvcstore

        root = self.root
        if not self.params_file.is_file():
            raise DemoError(f"no params file at {self.params_file}; pass --params FILE")
        wanted = self.params_file.read_text()
        if (root / "dvc.yaml").is_file() and (root / ".dvc").is_dir():
            if (root / "params.yaml").read_text() != wanted:
                raise DemoError(
                    f"{root} was made with other params than {self.params_file}; remove it "
                    f"(rm -rf {shown(root)}) or pass another --dir"
                )
            self.echo(f"   reusing {shown(root)}/ (made by an earlier run)")
            return
        if root.exists() and any(root.iterdir()):
            raise DemoError(
                f"{root} exists but is not a demo project; remove it (rm -rf {shown(root)}) "
                "or pass another --dir"
            )
        missing = [n for n in (*PROJECT_DIRS, *PROJECT_FILES) if not (REPO / n).exists()]
        if missing:
            raise DemoError(
                f"{REPO} lacks {', '.join(missing)}: run the demo from a clone of the repository"
            )
        if shutil.which("git") is None:
            raise DemoError("git is not installed; DVC needs it: install git and run again")
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        dvcstore.init_project(root)
        (root / "params.yaml").write_text(wanted)
        for name in PROJECT_DIRS:
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in PROJECT_FILES:
            shutil.copy(REPO / name, root / name)
            if name == ".gitignore":
                with (root / name).open("a") as ignore:
                    ignore.write(f"/{PREFECT_DIR}/\n")
        self.echo(
            f"   made {shown(root)}/: git + DVC (default remote {dvcstore.DEFAULT_REMOTE_PATH}/), "
            f"params.yaml from {shown(self.params_file)}, dvc.yaml, prefect.yaml and the code"
        )

    # -- 2. data --

    def make_data(self) -> None:
        """The raw data set regenerated from params.yaml (minus purged rows), under DVC."""
        from eul.pipeline.stages import init_data
        from eul.stores.dvc import dvcstore

        params = self.context().params
        result = init_data(params, self.root)
        raw = self.root / params.data.raw
        if result["written"]:
            self.echo(
                f"   wrote {result['rows']} rows of {params.data.n_subjects} subjects to "
                f"{shown(Path(result['records']))} ({result['purged_rows']} purged rows left out)"
            )
        else:
            self.echo(f"   {shown(Path(result['records']))} exists; left as it is")
        dvc_file = self.root / params.data.dvc_file
        if not dvc_file.is_file():
            md5 = dvcstore.add(self.root, params.data.raw, params.data.dvc_file)
            self.echo(f"   tracked by {shown(dvc_file)} ({md5})")
            committed = REPO / params.data.dvc_file
            if committed.is_file() and dvcstore.tracked_md5(committed) == md5:
                self.echo("   byte for byte the data set the repository's data.dvc tracks")
            return
        tracked, actual = dvcstore.tracked_md5(dvc_file), dvcstore.dir_md5(raw)
        if tracked != actual:
            raise DemoError(
                f"{raw} ({actual}) differs from {dvc_file} ({tracked}); remove "
                f"{shown(self.root)} and run the demo again"
            )
        self.echo(f"   matches {shown(dvc_file)} ({tracked})")

    # -- 3. dvc repro --

    def repro(self) -> None:
        """`dvc repro`, its output shown as it comes; skipped once the base model exists
        (after a purge DVC marks `train` stale: retraining is the `compact` flow's job)."""
        import yaml

        from eul.stores.dvc import dvcstore

        params = self.context().params
        base = self.root / params.train.out
        lock = self.root / "dvc.lock"
        stages = (
            (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}
        )
        if (base / "config.json").is_file() and "train" in stages:
            self.echo(
                f"   base model at {shown(base)} already trained (dvc.lock); not trained again "
                "(after a purge, retraining on the retained rows is the `compact` flow's job)"
            )
            return
        self.echo("   $ dvc repro   (the base model trains for a few minutes on 2 CPU cores)")
        code = run_shown([dvcstore.dvc_executable(), "repro"], self.root, self.echo)
        if code != 0:
            raise DemoError(f"`dvc repro` failed (exit {code}); see its output above")
        counts = {
            name: sum(1 for _ in (self.root / params.prepare.out / f"{name}.jsonl").open())
            for name in ("train", "heldout", "test")
        }
        shares = ", ".join(f"{name} {n}" for name, n in counts.items())
        self.echo(f"   rows by split: {shares}; base model saved to {shown(base)}")

    # -- 4. requests --

    def request_specs(self) -> list[dict[str, str]]:
        """The demo's requests, chosen on the first run and kept in requests.jsonl (the
        format of `eul requests submit --file`), so every run asks for the same ones."""
        path = self.root / REQUESTS_FILE
        if not path.is_file():
            ctx = self.context()
            train = ctx.prepared("train.jsonl")
            subjects = choose_subjects(train, VALID_REQUESTS, ctx.params.data.task)
            specs = [
                {"request_id": f"demo-{i}", "subject_id": subject}
                for i, subject in enumerate(subjects, start=1)
            ]
            specs.append({"request_id": "demo-bad", "subject_id": NOBODY})
            path.write_text("".join(json.dumps(s) + "\n" for s in specs))
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def submit_requests(self) -> None:
        from eul.stores.log.ledger import RequestSpec

        ctx = self.context()
        specs = self.request_specs()
        with ctx.ledger() as ledger:
            results = ledger.submit_many(
                [RequestSpec(subject_id=s["subject_id"], request_id=s["request_id"]) for s in specs]
            )
        self.echo(
            f"   {shown(self.root / REQUESTS_FILE)}: {len(specs)} requests, the last for a "
            "subject the data does not have (the format `eul requests submit --file` reads)"
        )
        for result in results:
            entry = result.entry
            what = f"subject {entry.details['subject_id']}"
            if result.created:
                self.echo(f"   submitted {entry.request_id}: {what}")
            else:
                self.echo(
                    f"   {entry.request_id} ({what}) already in the log since "
                    f"{entry.at[:16].replace('T', ' ')} UTC; nothing changed"
                )

    # -- 5. nightly batch --

    def nightly_batch(self) -> None:
        """The nightly flow with promotion left to a reviewer; only when work is pending."""
        ctx = self.context()
        with ctx.ledger() as ledger:
            pending = [s.request_id for s in ledger.list(status=PENDING)]
        if not pending:
            self.echo("   no pending request: an earlier run did this batch; nothing to do")
            return
        self.echo(f"   pending: {', '.join(pending)}; Prefect logs each task below")
        self.start_prefect()
        from flows.nightly import nightly_deletion_batch

        summary = nightly_deletion_batch(project_dir=str(self.root), auto_promote=False)
        self.ran_flows.append("nightly-deletion-batch")
        notes = self.rejection_notes(ctx)
        if summary.get("validated"):
            self.echo(f"   validated against the raw data: {', '.join(summary['validated'])}")
        for request_id in summary.get("rejected") or []:
            self.echo(f"   rejected {request_id}: {notes.get(request_id, '?')}")
        if "trained" in summary:
            self.echo(
                f"   trained {summary['trained']} unlearning layer(s), reused "
                f"{summary.get('reused_layers', 0)}; fused with production's"
            )
        if summary.get("version") is not None:
            verdict = "passed" if summary.get("gates_passed") else "FAILED"
            reused = " (registered by an earlier run)" if summary.get("reused") else ""
            self.echo(
                f"   registered version {summary['version']} as `candidate`{reused}; "
                f"gates {verdict}"
            )
            for reason in summary.get("gate_reasons") or []:
                self.echo(f"   - {reason}")
        self.echo(f"   outcome: {summary.get('outcome')}")

    @staticmethod
    def rejection_notes(ctx: Context) -> dict[str, str]:
        with ctx.ledger() as ledger:
            return {s.request_id: s.note or "" for s in ledger.list(status="rejected")}

    # -- 6. promote --

    def promote(self) -> None:
        """The `promote` flow for a candidate that passed its gates and is not production."""
        from eul.stores.registry.registry import (
            CANDIDATE,
            PRODUCTION,
            get_alias_version,
            version_tags,
        )

        settings = self.context().settings
        candidate = get_alias_version(settings, CANDIDATE)
        production = get_alias_version(settings, PRODUCTION)
        if candidate is None:
            self.echo("   no `candidate` version: nothing to promote")
            return
        if candidate == production:
            self.echo(f"   version {candidate} is already `production`; nothing to do")
            return
        tags = version_tags(settings, candidate)
        if tags.get("gates_passed") != "true":
            self.echo(
                f"   version {candidate} failed its gates ({tags.get('eul.gate_reasons', '?')}); "
                "left for a reviewer: the `promote` flow with an override reason"
            )
            return
        self.start_prefect()
        from flows.promote import promote_version

        result = promote_version(reviewer=REVIEWER, version=candidate, project_dir=str(self.root))
        self.ran_flows.append("promote")
        self.echo(f"   {result['outcome']}")
        deployed = result.get("new_requests") or []
        self.echo(f"   marked deployed in the log: {', '.join(deployed) or 'none'}")
        if result.get("purged"):
            self.echo(f"   the flow then purged: {', '.join(result['purged'])}")

    # -- 7. purge --

    def purge(self) -> None:
        """Purge what is still deployed (the `promote` flow usually has), then show the
        evidence the log keeps: hashes and counts, never rows."""
        from eul.pipeline.purge_step import purge_deployed

        ctx = self.context()
        with ctx.ledger() as ledger:
            waiting = ledger.list(status="deployed")
        if waiting:
            self.echo(f"   purging {', '.join(s.request_id for s in waiting)}")
            purge_deployed(ctx)
        with ctx.ledger() as ledger:
            purged = ledger.list(status="purged")
            evidence = {
                s.request_id: ledger.get(s.request_id).history[-1].details.get("evidence") or {}
                for s in purged
            }
        if not purged:
            self.echo("   no request is deployed yet: nothing to purge")
            return
        self.echo("   purged requests, with the evidence the log keeps:")
        gone: set[str] = set()
        for state in purged:
            found = evidence[state.request_id]
            gone.update(state.matched_ids or state.record_ids)
            self.echo(
                f"   {state.request_id}: {found.get('rows_removed', '?')} rows removed; data.dvc "
                f"{found.get('data_dvc_md5_before', '?')} -> {found.get('data_dvc_md5_after', '?')}"
                f"; remotes swept: {', '.join(found.get('remotes_swept') or []) or 'none'}"
            )
        params = ctx.params
        raw = self.root / params.data.raw / params.data.records_file
        left = sorted(gone & self.record_ids(raw))
        self.echo(
            f"   {len(left)} of the {len(gone)} purged record ids left in {shown(raw)}; evidence "
            f"(row hashes) in {shown(self.root / params.purge.ledger)}"
        )

    @staticmethod
    def record_ids(path: Path) -> set[str]:
        return {
            json.loads(line)["record_id"] for line in path.read_text().splitlines() if line.strip()
        }

    # -- 8. audit --

    def audit(self) -> None:
        """`eul audit --project DIR`, its output and exit status kept for the summary."""
        from eul.cli.main import main

        self.echo(f"   $ eul audit --project {shown(self.root)}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.audit_code = main(["audit", "--project", str(self.root)])
        for line in out.getvalue().splitlines():
            self.echo(f"   | {line}" if line else "   |")
        self.echo(f"   exit status {self.audit_code}")

    # -- summary --

    def summary(self, seconds: float) -> None:
        """What happened, from the log and the registry as they are now, and where to look."""
        from eul.stores.registry.registry import (
            PRODUCTION,
            covered_request_ids,
            get_alias_version,
            version_tags,
        )

        ctx = self.context()
        with ctx.ledger() as ledger:
            states = ledger.list()
        by_status: dict[str, list[str]] = {}
        for state in states:
            by_status.setdefault(state.status, []).append(state.request_id)
        notes = {s.request_id: s.note for s in states if s.status == "rejected"}
        version = get_alias_version(ctx.settings, PRODUCTION)
        tags = version_tags(ctx.settings, version) if version is not None else {}
        covered = covered_request_ids(tags)
        echo = self.echo
        echo(f"\n== summary: {seconds:.0f} s in all")
        echo("seconds by step: " + ", ".join(f"{k} {v:.0f}" for k, v in self.seconds.items()))
        echo(f"requests received: {len(states)} ({', '.join(s.request_id for s in states)})")
        rejected = [f"{rid} ({notes[rid]})" for rid in by_status.get("rejected", [])]
        echo(f"  rejected: {', '.join(rejected) or 'none'}")
        echo(f"  deployed (honoured by production): {', '.join(covered) or 'none'}")
        echo(f"  purged: {', '.join(by_status.get('purged', [])) or 'none'}")
        waiting = [rid for status in PENDING for rid in by_status.get(status, [])]
        echo(f"  pending: {', '.join(waiting) or 'none'}")
        if version is None:
            echo("production model: none yet (the base model of `dvc repro` serves)")
        else:
            echo(f"production model: {ctx.settings.model_name} version {version}")
            for key in ("covered_request_ids", "log_seq", "data_dvc_md5", "eul.kind",
                        "eul.batch_id", "eul.promoted_by", "gates_passed"):  # fmt: skip
                if key in tags:
                    echo(f"  {key}: {tags[key]}")
            self.show_gates(tags)
            self.show_metrics(ctx, tags)
        echo(f"flows run this time: {', '.join(self.ran_flows) or 'none (no work was pending)'}")
        verdict = {0: "OK", 1: "PROBLEMS (see above)"}.get(self.audit_code, "not run")
        echo(f"audit: {verdict} (exit status {self.audit_code})")
        self.show_where(ctx)

    def show_gates(self, tags: dict[str, str]) -> None:
        gates = json.loads(tags.get("gates", "{}"))
        self.echo("gates:")
        for name, gate in gates.items():
            verdict = "passed" if gate.get("passed") else "FAILED"
            self.echo(f"  {name}: {verdict} ({gate_details(gate)})")

    def show_metrics(self, ctx: Context, tags: dict[str, str]) -> None:
        """Before (the model the batch replaced) and after (the production version), on the
        same rows: forget rows against test rows."""
        path = ctx.workdir / "batches" / tags.get("eul.batch_id", "") / "evaluation.json"
        if not path.is_file():
            self.echo(f"metrics: {shown(path)} is missing")
            return
        evaluation = json.loads(path.read_text())["evaluation"]
        before, after = evaluation["production"], evaluation["candidate"]
        rows = evaluation["rows"]
        self.echo(
            f"metrics before -> after ({rows['forget']} forget rows, {rows['test']} test, "
            f"{rows['retained']} retained, {rows['unseen']} held-out for membership inference):"
        )
        for name in SHOWN_METRICS:
            old, new = before.get(name), after.get(name)
            if isinstance(old, float) and isinstance(new, float):
                self.echo(f"  {name:<22} {old:.3f} -> {new:.3f}")

    def show_where(self, ctx: Context) -> None:
        bin_dir = Path(sys.executable).parent
        home = self.prefect_home()
        echo = self.echo
        echo("where to look:")
        mlflow = bin_dir / "mlflow"
        echo(f"  MLflow UI:   {mlflow} ui --backend-store-uri {ctx.settings.tracking_uri}")
        if home.is_dir():
            echo(
                f"  Prefect UI:  PREFECT_HOME={home} PREFECT_API_DATABASE_CONNECTION_URL="
                f"{prefect_database_url(home)} {bin_dir / 'prefect'} server start"
            )
        echo(f"  the log:     {bin_dir / 'eul'} requests list --log-url {ctx.log_url}")
        params = ctx.params
        files = [
            (self.root / params.data.raw, "raw data (tracked by data.dvc)"),
            (self.root / params.prepare.out, "train/heldout/test split, tokenizer"),
            (self.root / params.train.out, "base model"),
            (self.root / REQUESTS_FILE, "the demo's deletion requests"),
            (local_path(ctx.log_url), "deletion log (hash-chained)"),
            (ctx.workdir / "layers", "one unlearning layer per request"),
            (ctx.workdir / "batches", "fused layer, fusion state, evaluation.json per batch"),
            (ctx.workdir / "reports", "each flow run's report and audit"),
            (local_path(ctx.settings.tracking_uri), "MLflow runs, registry"),
            (local_path(ctx.settings.artifact_location), "MLflow artifacts"),
            (self.root / params.purge.ledger, "purge evidence (row hashes)"),
            (self.root / ".dvc-remote", "DVC remote (purged objects swept)"),
            (home / "prefect.db", "Prefect flow runs, task runs, artifacts"),
        ]
        echo("files written:")
        for path, what in files:
            if path is not None and path.exists():
                echo(f"  {shown(path)}{'/' if path.is_dir() else ''}  {what}")


def run_demo(
    root: str | Path,
    params_file: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """The demo in `root`; returns the exit status of its `eul audit`."""
    return Demo(root, params_file, echo).run()
