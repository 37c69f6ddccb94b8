"""`eul demo`'s project folder: its layout, and the first three steps that make it.

1. project: a git + DVC project (local-folder remote) holding this checkout's params.yaml,
   dvc.yaml, prefect.yaml and code, so the repository's own files are never touched;
2. data: the embedded synthetic data set (`eul data init`), tracked by data.dvc;
3. dvc repro: prepare (split by subject, tokenizer), train the base model, partition.

Each step first looks at what is there, so a second run repeats no work.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from eul.pipeline.context import load_context

REPO = Path(__file__).resolve().parents[2]
# What the demo project copies from the checkout: the DVC stages depend on eul/, and with
# flows/, tasks/ and prefect.yaml the folder is a whole project (`python -m flows.serve`).
PROJECT_DIRS = ("eul", "flows", "tasks")
# dvc.yaml last: with it and .dvc/ in place, the folder counts as made
PROJECT_FILES = ("prefect.yaml", ".gitignore", "dvc.yaml")
REQUESTS_FILE = "requests.jsonl"
PREFECT_DIR = ".prefect"
# dvc's advice after a run, which the demo takes care of or does not need
DVC_HINTS = (
    "To track the changes",
    "git add ",
    "To enable auto staging",
    "dvc config ",
    "Use `dvc push`",
)


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


def shown(path: Path) -> str:
    """`path` relative to the working directory when inside it (shorter to read)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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


# -- 1. project ----------------------------------------------------------------------------


def make_project(root: Path, params_file: Path, echo: Callable[[str], None]) -> None:
    """A git + DVC project with a copy of the checkout's code and pipeline files."""
    from eul.stores.dvc import dvcstore

    if not params_file.is_file():
        raise DemoError(f"no params file at {params_file}; pass --params FILE")
    wanted = params_file.read_text()
    if (root / "dvc.yaml").is_file() and (root / ".dvc").is_dir():
        if (root / "params.yaml").read_text() != wanted:
            raise DemoError(
                f"{root} was made with other params than {params_file}; remove it "
                f"(rm -rf {shown(root)}) or pass another --dir"
            )
        echo(f"   reusing {shown(root)}/ (made by an earlier run)")
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
    echo(
        f"   made {shown(root)}/: git + DVC (default remote {dvcstore.DEFAULT_REMOTE_PATH}/), "
        f"params.yaml from {shown(params_file)}, dvc.yaml, prefect.yaml and the code"
    )


# -- 2. data -------------------------------------------------------------------------------


def make_data(root: Path, echo: Callable[[str], None]) -> None:
    """The raw data set regenerated from params.yaml (minus purged rows), under DVC."""
    from eul.pipeline.stages import init_data
    from eul.stores.dvc import dvcstore

    params = load_context(root).params
    result = init_data(params, root)
    raw = root / params.data.raw
    if result["written"]:
        echo(
            f"   wrote {result['rows']} rows of {params.data.n_subjects} subjects to "
            f"{shown(Path(result['records']))} ({result['purged_rows']} purged rows left out)"
        )
    else:
        echo(f"   {shown(Path(result['records']))} exists; left as it is")
    dvc_file = root / params.data.dvc_file
    if not dvc_file.is_file():
        md5 = dvcstore.add(root, params.data.raw, params.data.dvc_file)
        echo(f"   tracked by {shown(dvc_file)} ({md5})")
        committed = REPO / params.data.dvc_file
        if committed.is_file() and dvcstore.tracked_md5(committed) == md5:
            echo("   byte for byte the data set the repository's data.dvc tracks")
        return
    tracked, actual = dvcstore.tracked_md5(dvc_file), dvcstore.dir_md5(raw)
    if tracked != actual:
        raise DemoError(
            f"{raw} ({actual}) differs from {dvc_file} ({tracked}); remove "
            f"{shown(root)} and run the demo again"
        )
    echo(f"   matches {shown(dvc_file)} ({tracked})")


# -- 3. dvc repro --------------------------------------------------------------------------


def repro(root: Path, echo: Callable[[str], None]) -> None:
    """`dvc repro`, its output shown as it comes; skipped once the base model exists
    (after a purge DVC marks `train` stale: retraining is the `compact` flow's job)."""
    import yaml

    from eul.stores.dvc import dvcstore

    params = load_context(root).params
    base = root / params.train.out
    lock = root / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}
    if (base / "config.json").is_file() and "train" in stages:
        echo(
            f"   base model at {shown(base)} already trained (dvc.lock); not trained again "
            "(after a purge, retraining on the retained rows is the `compact` flow's job)"
        )
        return
    echo("   $ dvc repro   (the base model trains for a few minutes on 2 CPU cores)")
    code = run_shown([dvcstore.dvc_executable(), "repro"], root, echo)
    if code != 0:
        raise DemoError(f"`dvc repro` failed (exit {code}); see its output above")
    counts = {
        name: sum(1 for _ in (root / params.prepare.out / f"{name}.jsonl").open())
        for name in ("train", "heldout", "test")
    }
    shares = ", ".join(f"{name} {n}" for name, n in counts.items())
    echo(f"   rows by split: {shares}; base model saved to {shown(base)}")
