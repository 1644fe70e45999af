"""Versioned data: push from one clone, pull into a fresh one, nothing recomputed;
the same through a real S3 API (moto's server on 127.0.0.1); and this repository used
as a data registry by another one (`dvc get` / `dvc import` at a revision)."""

import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.dvcproject import make_clone, sh, stages_run

pytestmark = pytest.mark.slow  # DVC and end-to-end runs: `make test` only


def checksum(path: Path) -> str:
    """md5 of a file, or of a directory's relative file names and contents."""
    digest = hashlib.md5()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def outputs(clone: Path) -> dict[str, str]:
    """Checksums of every stage output of the clone's dvc.lock, by path."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    paths = [o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])]
    return {p: checksum(clone / p) for p in paths}


def publish(clone: Path, *push_args, env=None) -> dict[str, str]:
    """Run the pipeline, commit dvc.lock, push the outputs; return their checksums.

    The clone's sources get bytecode beside them, as a working tree that has run Python
    has (git ignores it; a fresh clone has none, and must not rerun stages for it)."""
    for package in ("core", "census", "imagery/synth", "training/models"):
        cache = clone / "src" / "urbanmap" / package / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / "__init__.cpython-311.pyc").write_bytes(b"bytecode")
    sh("dvc", "repro", cwd=clone)
    sh("git", "add", "-A", cwd=clone)
    sh("git", "commit", "-qm", "results", cwd=clone)
    sh("git", "tag", "v1", cwd=clone)
    sh("dvc", "push", *push_args, cwd=clone, env=env)
    return outputs(clone)


def fresh_clone(source: Path, parent: Path) -> Path:
    parent.mkdir()
    (parent / "shared").symlink_to((source.parent / "shared").resolve())
    sh("git", "clone", "-q", source, parent / "urbanmap", cwd=parent)
    return parent / "urbanmap"


def check_pulled(clone: Path, expected: dict[str, str]):
    assert outputs(clone) == expected
    status = sh("dvc", "status", cwd=clone).stdout
    assert "up to date" in status, status
    assert stages_run(sh("dvc", "repro", cwd=clone).stdout) == []


def test_push_then_pull_into_a_fresh_clone(tmp_path, shared_data):
    store = tmp_path / "store"
    clone = make_clone(tmp_path / "a", remote=store)
    expected = publish(clone)
    other = fresh_clone(clone, tmp_path / "b")
    sh("dvc", "pull", cwd=other)
    check_pulled(other, expected)

    # the registry: another project takes the labelled grid at a revision
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    sh("git", "init", "-q", cwd=consumer)
    sh("dvc", "init", "-q", cwd=consumer)
    labels = "data/small/labels.parquet"
    sh("dvc", "get", clone, labels, "--rev", "v1", "-o", "got.parquet", cwd=consumer)
    sh("dvc", "import", clone, labels, "--rev", "v1", "-o", "labels.parquet", cwd=consumer)
    for name in ("got.parquet", "labels.parquet"):
        assert hashlib.md5((consumer / name).read_bytes()).hexdigest() == expected[labels]
    assert yaml.safe_load((consumer / "labels.parquet.dvc").read_text())["deps"][0]["repo"]["rev"] == "v1"

    # a remote that does not exist: DVC's error reaches the user, nothing is lost
    bad = sh("dvc", "push", "-r", "nowhere", cwd=clone, check=False)
    assert bad.returncode != 0 and "nowhere" in bad.stderr + bad.stdout


def test_corrupted_remote_file_is_caught(tmp_path, shared_data):
    store = tmp_path / "store"
    clone = make_clone(tmp_path / "a", remote=store)
    expected = publish(clone)
    labels_md5 = expected["data/small/labels.parquet"]
    blob = store / "files" / "md5" / labels_md5[:2] / labels_md5[2:]
    blob.chmod(0o644)
    blob.write_bytes(b"corrupted")
    other = fresh_clone(clone, tmp_path / "b")
    sh("dvc", "remote", "modify", "--local", "store", "verify", "true", cwd=other)
    result = sh("dvc", "pull", cwd=other, check=False)
    assert result.returncode != 0
    assert not (other / "data/small/labels.parquet").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server():
    """Moto's S3-compatible server on 127.0.0.1, stopped after the test."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_push_pull_through_s3(tmp_path, shared_data, s3_server):
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=s3_server, **{k.lower(): v for k, v in env.items() if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1").create_bucket(Bucket="urbanmap")
    clone = make_clone(tmp_path / "a")
    for c in (clone,):
        sh("dvc", "remote", "add", "s3", "s3://urbanmap/dvc", cwd=c)
        sh("dvc", "remote", "modify", "s3", "endpointurl", s3_server, cwd=c)
    expected = publish(clone, "-r", "s3", env=env)
    other = fresh_clone(clone, tmp_path / "b")
    sh("dvc", "pull", "-r", "s3", cwd=other, env=env)
    check_pulled(other, expected)

    # a bucket that does not exist: DVC's error reaches the user, the workspace is intact
    sh("dvc", "remote", "add", "gone", "s3://no-such-bucket/dvc", cwd=other)
    sh("dvc", "remote", "modify", "gone", "endpointurl", s3_server, cwd=other)
    failed = sh("dvc", "push", "-r", "gone", cwd=other, env=env, check=False)
    assert failed.returncode != 0 and "bucket does not exist" in failed.stderr
    assert outputs(other) == expected
