"""DVC helpers: run `dvc`, configure local and S3 remotes, read tracked hashes.

Data moves through the `dvc` command line (add, push, pull, gc, repro), as a person would
type it, so the project stays a plain DVC project; remote settings are written with DVC's
own config code, which is what `dvc remote add/modify` runs. Credentials of an S3 remote go
only to `.dvc/config.local` (which git ignores) or come from the AWS_* environment, and
every error message from here has them replaced by ***.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from eul.runtime.urls import redacted

DEFAULT_REMOTE = "local"
DEFAULT_REMOTE_PATH = ".dvc-remote"


class DvcError(RuntimeError):
    """A `dvc` command failed; the message is its last error line, secrets removed."""


def dvc_executable() -> str:
    """The `dvc` next to this Python (the project's environment), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    if beside.is_file():
        return str(beside)
    found = shutil.which("dvc")
    if found is None:
        raise DvcError("dvc is not installed; install the project with `pip install -e .`")
    return found


def run_dvc(
    args: Sequence[str],
    root: str | Path,
    secrets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """Run `dvc ARGS` in `root` and return its stdout; raise DvcError when it fails.

    `secrets` (and any credential in config.local or the AWS_* variables) are replaced by
    *** in the error message.
    """
    full_env = {**os.environ, **(env or {}), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [dvc_executable(), *args],
        cwd=root,
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
        shown = redacted(" ".join(args[:2]), secrets, root)
        message = redacted(errors[-1], secrets, root)
        raise DvcError(f"`dvc {shown}` failed (exit {proc.returncode}): {message}")
    return proc.stdout


# -- project and remotes ------------------------------------------------------------------


@contextmanager
def _edit_config(root: str | Path, level: str = "repo") -> Iterator[dict[str, Any]]:
    """Edit .dvc/config ("repo") or .dvc/config.local ("local") through DVC's own config
    code, which validates the result, the same as `dvc remote add/modify` does; in-process
    because each `dvc remote` command costs a second of start-up."""
    from dvc.config import Config

    dvc_dir = Path(root) / ".dvc"
    if not dvc_dir.is_dir():
        raise DvcError(f"{root} is not a DVC project; run `dvc init` first")
    with Config(dvc_dir=str(dvc_dir), validate=False).edit(level) as conf:
        yield conf


def init_project(
    root: str | Path,
    remote_path: str | Path = DEFAULT_REMOTE_PATH,
    remote_name: str = DEFAULT_REMOTE,
) -> None:
    """`dvc init` in a git repository, with a local-folder default remote."""
    root = Path(root)
    if not (root / ".git").exists():
        raise DvcError(f"{root} is not a git repository; run `git init` first")
    if not (root / ".dvc").is_dir():
        run_dvc(["init"], root)
    add_local_remote(root, remote_name, remote_path, default=True)


def add_local_remote(root: str | Path, name: str, path: str | Path, default: bool = False) -> None:
    """Add (or repoint) a remote that is a folder; a relative path is taken from `root` and
    stays relative in the config, so the project can move."""
    from dvc.config_schema import RelPath

    folder = Path(path)
    url = str(folder) if folder.is_absolute() else RelPath((Path(root) / folder).resolve())
    with _edit_config(root) as conf:
        conf["remote"].setdefault(name, {})["url"] = url
        if default:
            conf["core"]["remote"] = name


def add_s3_remote(
    root: str | Path,
    name: str,
    url: str,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    default: bool = False,
) -> None:
    """Add an S3 remote (`s3://bucket/path`), on AWS or any S3-compatible endpoint.

    The URL and endpoint go to `.dvc/config` (committed); the keys, when given, go to
    `.dvc/config.local` only. Without keys, DVC reads AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (or the AWS profile) at push/pull time.
    """
    if not url.startswith("s3://"):
        raise DvcError(f"an S3 remote URL starts with s3://, got {url!r}")
    if (access_key_id is None) != (secret_access_key is None):
        raise DvcError("give both the access key id and the secret access key, or neither")
    options = {"url": url}
    if endpoint_url:
        options["endpointurl"] = endpoint_url
    if region:
        options["region"] = region
    with _edit_config(root) as conf:
        conf["remote"].setdefault(name, {}).update(options)
        if default:
            conf["core"]["remote"] = name
    if access_key_id is not None and secret_access_key is not None:
        with _edit_config(root, "local") as conf:
            section = conf["remote"].setdefault(name, {})
            section.update(access_key_id=access_key_id, secret_access_key=secret_access_key)


def _merged_config(root: str | Path) -> dict[str, Any]:
    from dvc.config import Config

    return Config(dvc_dir=str(Path(root) / ".dvc"), validate=False)


def remotes(root: str | Path) -> dict[str, str]:
    """Configured remotes, name -> URL (no credentials)."""
    return {name: str(section.get("url", "")) for name, section in
            _merged_config(root)["remote"].items()}  # fmt: skip


def default_remote(root: str | Path) -> str | None:
    """The default remote's name, or None."""
    return _merged_config(root)["core"].get("remote") or None


# -- data -------------------------------------------------------------------------------


def add(root: str | Path, target: str, dvc_file: str | None = None) -> str:
    """`dvc add` a file or folder; return the md5 it is tracked under.

    `dvc_file` puts the .dvc file elsewhere than `<target>.dvc` (data.dvc at the root for
    data/raw): the first time it is moved there with its path rewritten, later calls find
    and update it.
    """
    root = Path(root)
    default_file = root / f"{target}.dvc"
    wanted = root / dvc_file if dvc_file else default_file
    run_dvc(["add", target], root)
    if wanted != default_file and default_file.is_file() and not wanted.is_file():
        content = yaml.safe_load(default_file.read_text(encoding="utf-8"))
        out_path = (root / target).resolve().relative_to(wanted.parent.resolve())
        content["outs"][0]["path"] = out_path.as_posix()
        wanted.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        default_file.unlink()
    return tracked_md5(wanted)


def push(root: str | Path, remote: str | None = None, targets: Sequence[str] = ()) -> None:
    """`dvc push` to `remote` (default remote when None)."""
    run_dvc(["push", *(["-r", remote] if remote else []), *targets], root)


def pull(
    root: str | Path, remote: str | None = None, targets: Sequence[str] = (), force: bool = False
) -> None:
    """`dvc pull` from `remote` (default remote when None)."""
    args = ["pull", *(["-r", remote] if remote else []), *(["--force"] if force else [])]
    run_dvc([*args, *targets], root)


def gc_workspace(root: str | Path, remote: str | None = None) -> None:
    """Delete every cached object the workspace does not use, and on `remote` too if given.

    Workspace scope on purpose: with `--all-commits`, older data.dvc versions in git
    history would keep the very objects a purge has to delete.
    """
    args = ["gc", "--workspace", "--force"]
    if remote:
        args += ["--cloud", "--remote", remote]
    run_dvc(args, root)


def tracked_md5(dvc_file: str | Path) -> str:
    """The md5 of the (single) output a .dvc file tracks, `.dir` suffix included."""
    path = Path(dvc_file)
    if not path.is_file():
        raise DvcError(f"no {path}; track the data with `dvc add` first")
    content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    outs = content.get("outs") or []
    if len(outs) != 1 or "md5" not in outs[0]:
        raise DvcError(f"{path} must track exactly one output with an md5")
    return str(outs[0]["md5"])


def file_md5(path: str | Path) -> str:
    """MD5 of a file, as DVC computes it for the cache."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_entries(folder: str | Path) -> list[dict[str, str]]:
    """The `.dir` listing DVC stores for a folder: md5 and relative path of every file."""
    folder = Path(folder)
    entries = [
        {"md5": file_md5(p), "relpath": p.relative_to(folder).as_posix()}
        for p in folder.rglob("*")
        if p.is_file()
    ]
    return sorted(entries, key=lambda e: e["relpath"])


def dir_md5(folder: str | Path) -> str:
    """The md5 DVC tracks a folder under (`<md5>.dir`), computed without DVC."""
    import json

    listing = json.dumps(dir_entries(folder), sort_keys=True).encode("utf-8")
    return hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"


def object_relpath(oid: str) -> str:
    """Where DVC 3 keeps an object inside a cache or remote: files/md5/ab/cdef..."""
    return f"files/md5/{oid[:2]}/{oid[2:]}"


# -- object stores, through DVC's own clients (any remote type) ---------------------------


@contextmanager
def _repo(root: str | Path) -> Iterator[Any]:
    from dvc.repo import Repo

    repo = Repo(str(root))
    try:
        yield repo
    finally:
        repo.close()


def remote_oids(root: str | Path, remote: str) -> set[str]:
    """Every object id stored on `remote` (DVC 3 layout)."""
    with _repo(root) as repo:
        odb = repo.cloud.get_remote_odb(remote, "purge")
        return set(odb.all())


def read_remote_objects(root: str | Path, remote: str, oids: Sequence[str]) -> Iterator[bytes]:
    """The bytes of the given objects of `remote`, one at a time."""
    with _repo(root) as repo:
        odb = repo.cloud.get_remote_odb(remote, "purge")
        for oid in oids:
            yield odb.fs.cat_file(odb.oid_to_path(oid))


def delete_cache_objects(root: str | Path, oids: Iterable[str]) -> int:
    """Delete objects from the project's DVC cache; returns how many were there."""
    cache = Path(root) / ".dvc" / "cache"
    deleted = 0
    for oid in oids:
        path = cache / object_relpath(oid)
        if path.is_file():
            path.chmod(0o644)  # DVC may make cache files read-only
            path.unlink()
            deleted += 1
    return deleted


def delete_remote_objects(root: str | Path, remote: str, oids: Iterable[str]) -> int:
    """Delete objects from `remote` (any remote type, through DVC's client); returns how many
    were there."""
    wanted = set(oids)
    with _repo(root) as repo:
        odb = repo.cloud.get_remote_odb(remote, "erase")
        present = wanted & set(odb.all())
        for oid in sorted(present):
            odb.fs.rm_file(odb.oid_to_path(oid))
    return len(present)


# -- small files beside the objects of a remote -------------------------------------------


def write_remote_file(root: str | Path, remote: str, relpath: str, data: bytes) -> bool:
    """Write `data` to `relpath` under `remote`'s root (beside `files/md5`, which `dvc gc`
    leaves alone), unless a file is there already: nothing is overwritten. Returns whether it
    wrote."""
    try:
        with _repo(root) as repo:
            found = repo.cloud.get_remote(remote, "anchors")
            path = found.fs.join(found.path, *relpath.split("/"))
            if found.fs.exists(path):
                return False
            found.fs.makedirs(found.fs.parent(path), exist_ok=True)
            found.fs.pipe_file(path, data)
            return True
    except Exception as err:
        raise _remote_error(root, remote, "write to", err) from None


def read_remote_files(root: str | Path, remote: str, folder: str) -> dict[str, bytes]:
    """Every file under `folder` of `remote`'s root, by name relative to that folder;
    {} when there is no such folder."""
    try:
        with _repo(root) as repo:
            found = repo.cloud.get_remote(remote, "anchors")
            top = found.fs.join(found.path, *folder.strip("/").split("/"))
            try:
                paths = sorted(found.fs.find(top))
            except FileNotFoundError:
                return {}
            return {found.fs.relpath(p, top): found.fs.cat_file(p) for p in paths}
    except Exception as err:
        raise _remote_error(root, remote, "read", err) from None


def _remote_error(root: str | Path, remote: str, doing: str, err: Exception) -> DvcError:
    """A one-line DvcError for a failed remote access, credentials replaced by ***."""
    if isinstance(err, DvcError):
        return err
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    message = redacted(lines[0] if lines else type(err).__name__, root=root)
    return DvcError(f"could not {doing} remote {remote}: {message}")
