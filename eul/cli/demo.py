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
pending requests or a candidate awaits promotion. The flows run as `python -m flows` in the
demo folder against a Prefect server on a SQLite database inside it, started only when a flow
has to run, so that `prefect server start` (the command the summary prints) shows the runs
later.

The project set-up (steps 1-3) is `eul.cli.demo_project`, the Prefect server and the flow
runner `eul.cli.demo_prefect`, the summary `eul.cli.demo_summary`.

Only ids, counts, hashes and metrics are printed: never the text of a row being forgotten.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from eul.cli.audit import audit_project
from eul.cli.demo_prefect import create_global_limit, local_prefect, run_flow
from eul.cli.demo_project import (
    PREFECT_DIR,
    REPO,
    REQUESTS_FILE,
    DemoError,
    make_data,
    make_project,
    repro,
    shown,
)
from eul.cli.demo_summary import PENDING, Summary
from eul.cli.errors import run_reported
from eul.pipeline.context import Context, load_context
from eul.runtime.environment import environment, tool_variables

__all__ = ["NOBODY", "REQUESTS_FILE", "DemoError", "choose_subjects", "run_demo"]

REVIEWER = "demo"
VALID_REQUESTS = 3
NOBODY = "s9999"


def tool_environment() -> AbstractContextManager[None]:
    """`tool_variables` set for the block (the pipeline runs `dvc` too), then restored."""
    return environment(tool_variables())


def choose_subjects(train_file: Path, n: int, task: str) -> list[str]:
    """`n` subjects of the training split with at least three rows, in id order: the first
    one with a memorised row (a flipped label learnt by heart, which forgetting must undo),
    then ones without. Deterministic, so the demo always asks for the same people."""
    from eul.data.readers import load_records

    rows: dict[str, list[bool]] = {}
    for record in load_records(train_file, task=task):
        rows.setdefault(record.subject_id, []).append(record.memorised)
    subjects = sorted(s for s, flags in rows.items() if len(flags) >= 3) or sorted(rows)
    memorised = [s for s in subjects if any(rows[s])][:1]
    chosen = memorised + [s for s in subjects if s not in memorised][: n - len(memorised)]
    if len(chosen) < n:
        raise DemoError(f"{train_file} has only {len(chosen)} subjects; the demo asks for {n}")
    return chosen


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
        self._api: str | None = None

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

    def start_prefect(self) -> str:
        """The local Prefect server, started at the first flow of this run; its API URL."""
        if self._api is not None:
            return self._api
        self.echo(f"   starting a Prefect server on {shown(self.prefect_home() / 'prefect.db')}")
        stack = contextlib.ExitStack()
        api = stack.enter_context(local_prefect(self.prefect_home()))
        self._prefect, self._api = stack, api
        from eul.pipeline.context import MODEL_LIMIT

        create_global_limit(MODEL_LIMIT, 1)
        self.echo(f"   Prefect API at {api} (stopped when the demo ends)")
        return api

    def stop_prefect(self) -> None:
        if self._prefect is not None:
            stack, self._prefect, self._api = self._prefect, None, None
            stack.close()

    # -- 1-3. the project folder, the data, dvc repro (eul.cli.demo_project) --

    def make_project(self) -> None:
        """A git + DVC project with a copy of the checkout's code and pipeline files."""
        make_project(self.root, self.params_file, self.echo)

    def make_data(self) -> None:
        """The raw data set regenerated from params.yaml (minus purged rows), under DVC."""
        make_data(self.root, self.echo)

    def repro(self) -> None:
        """`dvc repro`, skipped once the base model exists."""
        repro(self.root, self.echo)

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
        from eul.stores.log.schema import RequestSpec

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
        for spec, result in zip(specs, results, strict=True):
            entry = result.entry  # it keeps the subject keyed; the demo knows whom it asked for
            what = f"subject {spec['subject_id']}"
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
        api = self.start_prefect()
        summary = run_flow(self.root, api, "nightly", ["--no-auto-promote"], self.echo)
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
        from eul.stores.registry.versions import (
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
        api = self.start_prefect()
        options = ["--reviewer", REVIEWER, "--version", str(candidate)]
        result = run_flow(self.root, api, "promote", options, self.echo)
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
        self.echo(f"   $ eul audit --project {shown(self.root)}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.audit_code = run_reported(lambda: audit_project(str(self.root)))
        for line in out.getvalue().splitlines():
            self.echo(f"   | {line}" if line else "   |")
        self.echo(f"   exit status {self.audit_code}")

    # -- summary (eul.cli.demo_summary) --

    def summary(self, seconds: float) -> None:
        """What happened, from the log and the registry as they are now, and where to look."""
        Summary(self.root, self.echo, self.seconds, self.ran_flows, self.audit_code).show(seconds)


def run_demo(
    root: str | Path,
    params_file: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """The demo in `root`; returns the exit status of its `eul audit`."""
    return Demo(root, params_file, echo).run()
