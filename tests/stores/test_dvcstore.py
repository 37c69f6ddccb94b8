"""DVC remotes: a local folder and S3 through a real S3-compatible server on loopback."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from eul.cli.main import main
from eul.data.records import save_records
from eul.data.synthetic import SyntheticConfig, generate
from eul.stores.dvc import dvcstore


def _write_raw(root) -> bytes:
    _, records = generate(SyntheticConfig(n_subjects=12, seed=2))
    path = root / "data" / "raw" / "records.jsonl"
    save_records(records, path)
    return path.read_bytes()


def _drop_local_copies(root) -> None:
    shutil.rmtree(root / "data" / "raw")
    shutil.rmtree(root / ".dvc" / "cache")


def _git_tracked_text(root) -> str:
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    files = subprocess.run(
        ["git", "ls-files"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.split()
    return "".join((root / f).read_text(errors="replace") for f in files if (root / f).is_file())


def test_data_dvc_at_the_root_tracks_the_raw_folder_with_dvc_own_hash(dvc_project):
    # given raw data in data/raw
    root = dvc_project
    _write_raw(root)
    # when it is added with its .dvc file at the root
    md5 = dvcstore.add(root, "data/raw", "data.dvc")
    # then data.dvc tracks data/raw under the hash DVC computed, which our hashing reproduces
    assert (root / "data.dvc").is_file() and not (root / "data" / "raw.dvc").exists()
    assert "path: data/raw" in (root / "data.dvc").read_text()
    assert md5 == dvcstore.tracked_md5(root / "data.dvc") == dvcstore.dir_md5(root / "data/raw")
    assert "Data and pipelines are up to date" in dvcstore.run_dvc(["status"], root)
    # and a later add updates the same file
    with (root / "data" / "raw" / "records.jsonl").open("a") as f:
        f.write('{"record_id": "r999999", "subject_id": "s9999"}\n')
    assert dvcstore.add(root, "data/raw", "data.dvc") != md5
    assert not (root / "data" / "raw.dvc").exists()


def test_local_folder_remote_push_and_pull(dvc_project):
    # given a project whose default remote is a local folder
    root = dvc_project
    original = _write_raw(root)
    dvcstore.add(root, "data/raw", "data.dvc")
    assert dvcstore.default_remote(root) == "local"
    # when the data is pushed, then every local copy dropped and the data pulled back
    dvcstore.push(root)
    assert any((root / ".dvc-remote" / "files" / "md5").rglob("*"))
    _drop_local_copies(root)
    dvcstore.pull(root)
    # then the bytes are the same
    assert (root / "data" / "raw" / "records.jsonl").read_bytes() == original


def test_s3_remote_push_and_pull_through_a_real_server(dvc_project, s3_server):
    # given an S3 remote on a loopback S3 server, keys stored for this checkout only
    root = dvc_project
    original = _write_raw(root)
    md5 = dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.add_s3_remote(
        root,
        "s3",
        f"s3://{s3_server.bucket}/store",
        endpoint_url=s3_server.endpoint,
        access_key_id=s3_server.key,
        secret_access_key=s3_server.secret,
    )
    # then the endpoint is committed config, the secret is not
    assert s3_server.endpoint in (root / ".dvc" / "config").read_text()
    assert s3_server.secret in (root / ".dvc" / "config.local").read_text()
    assert s3_server.secret not in _git_tracked_text(root)
    assert s3_server.secret not in str(dvcstore.remotes(root))
    # when the data is pushed to S3
    dvcstore.push(root, "s3")
    # then the server's folder holds the objects, and DVC lists them through S3
    stored = {p.parent.name + p.name for p in (s3_server.bucket_dir / "store").rglob("*") if
              p.is_file()}  # fmt: skip
    assert md5 in stored
    assert dvcstore.remote_oids(root, "s3") == stored
    # and after dropping every local copy, a pull from S3 restores the same bytes
    _drop_local_copies(root)
    dvcstore.pull(root, "s3")
    assert (root / "data" / "raw" / "records.jsonl").read_bytes() == original


def test_s3_credentials_can_come_from_the_environment_only(
    dvc_project, s3_server, monkeypatch, tmp_path
):
    # given an S3 remote configured with no keys at all, and none in this environment
    root = dvc_project
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    _write_raw(root)
    dvcstore.add(root, "data/raw", "data.dvc")
    dvcstore.add_s3_remote(
        root, "s3", f"s3://{s3_server.bucket}/env", endpoint_url=s3_server.endpoint
    )
    assert not (root / ".dvc" / "config.local").exists()
    # when the push has no credentials, then it fails
    with pytest.raises(dvcstore.DvcError):
        dvcstore.push(root, "s3")
    # when the keys are in the AWS_* environment, then it works
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    dvcstore.push(root, "s3")
    assert any((s3_server.bucket_dir / "env").rglob("*.dir"))


def test_errors_never_repeat_a_stored_credential(dvc_project, s3_server):
    # given keys stored for an S3 remote
    root = dvc_project
    dvcstore.add_s3_remote(root, "s3", f"s3://{s3_server.bucket}/x", access_key_id="AKIDEXAMPLE1",
                           secret_access_key=s3_server.secret)  # fmt: skip
    # when a failing command happens to echo one of them
    with pytest.raises(dvcstore.DvcError) as err:
        dvcstore.run_dvc(["add", s3_server.secret], root)
    # then the message has *** instead
    assert s3_server.secret not in str(err.value)
    assert "***" in str(err.value)


def test_errors_never_repeat_a_secret(dvc_project):
    # given a dvc command whose error message would echo its argument
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    # when it fails, then the message has *** where the secret was
    with pytest.raises(dvcstore.DvcError) as err:
        dvcstore.run_dvc(["add", secret], dvc_project, secrets=[secret])
    assert secret not in str(err.value)
    assert "***" in str(err.value)


def test_cli_adds_an_s3_remote_without_printing_the_secret(
    dvc_project, s3_server, monkeypatch, capsys
):
    # given credentials in the environment
    monkeypatch.chdir(dvc_project)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    # when the CLI adds the remote and stores the keys for this checkout
    code = main(["data", "remote", "s3", f"s3://{s3_server.bucket}/cli", "--endpoint-url",
                 s3_server.endpoint, "--store-credentials"])  # fmt: skip
    out = capsys.readouterr()
    # then it worked, said where the keys went, and printed no secret
    assert code == 0
    assert "config.local" in out.out
    assert s3_server.secret not in out.out + out.err
    assert s3_server.secret in (dvc_project / ".dvc" / "config.local").read_text()
    # and a non-S3 URL is refused in one line
    code = main(["data", "remote", "bad", "http://example.org/x"])
    assert code == 2
    assert "starts with s3://" in capsys.readouterr().err
