"""An S3-compatible object store for tests: moto's server mode on 127.0.0.1.

Fixtures:
    s3_server (session): a ``moto_server`` subprocess on a free port; ``.endpoint`` and ``.env``.
    s3_bucket (function): a fresh, uniquely named bucket, with ``s3_server.env`` set in
        ``os.environ`` for the test; ``.name``, ``.uri`` (``s3://name``), ``.endpoint``, ``.env``.

moto runs in its own process rather than as ``ThreadedMotoServer`` in the test process: moto's
in-process ``mock_aws`` resets all of moto's backends when it starts, which would empty a
threaded server's buckets under a running test, and it patches botocore in the test process.

What the clients need (measured with pyarrow 25, deltalake 1.6.6, boto3 1.44):
    - pyarrow: ``FileSystem.from_uri("s3://bucket/key")``, ``parquet.write_table`` and
      ``parquet.read_table`` on ``s3://`` work with ``AWS_ENDPOINT_URL`` (honoured by
      ``from_uri`` since Arrow 14) and the two keys; no ``?endpoint_override=`` or ``?region=``
      in the URI. No region variable is needed: ``from_uri`` asks the bucket's region with a
      HEAD request and moto answers ``us-east-1``.
    - deltalake (the object_store crate): ``write_deltalake("s3://...")`` and ``DeltaTable``
      work with the same variables plus ``AWS_ALLOW_HTTP=true``, without which the ``http://``
      endpoint fails ("URL scheme is not allowed"); no locking provider and no
      ``AWS_S3_ALLOW_UNSAFE_RENAME`` are needed. No region variable is needed either.
    - boto3: defaults to ``us-east-1`` for S3 when no region is set; with any other region,
      ``create_bucket`` needs a ``LocationConstraint``. The fixtures set ``us-east-1`` in both
      ``AWS_DEFAULT_REGION`` and ``AWS_REGION`` so that every client agrees.
    - ``AWS_EC2_METADATA_DISABLED`` keeps the SDKs from probing the EC2 metadata endpoint.
    - Spark's own ``s3a://`` reader is not covered: it needs the hadoop-aws jars.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["S3Bucket", "S3Server", "s3_bucket", "s3_server", "start_s3_server"]

REGION = "us-east-1"
_READY = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")


@dataclasses.dataclass
class S3Server:
    """A running moto server.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT``.
        env: The variables S3 clients (pyarrow, deltalake, boto3) need to use it.
    """

    endpoint: str
    env: dict[str, str]
    process: subprocess.Popen
    folder: Path

    def client(self):
        """A boto3 S3 client for this server (for set-up and checks, not the code under test)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self) -> S3Bucket:
        """A new bucket with a unique name."""
        name = f"deepspark-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return S3Bucket(name, f"s3://{name}", self.endpoint, dict(self.env))

    def delete_bucket(self, name: str) -> None:
        """Delete a bucket and everything in it (moto keeps objects in memory)."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)

    def stop(self) -> None:
        """Stop the server and remove its log folder."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class S3Bucket:
    """A bucket on the test server; ``uri`` is ``s3://name``."""

    name: str
    uri: str
    endpoint: str
    env: dict[str, str]


def start_s3_server(*, timeout: float = 30) -> S3Server:
    """Start ``moto_server`` on 127.0.0.1 and a free port; wait until it listens.

    Args:
        timeout: Seconds to wait for the server to listen.

    Returns:
        The running server; call ``stop()`` when done.

    Raises:
        RuntimeError: The server exited or did not listen in time (its log is in the message).
    """
    folder = Path(tempfile.mkdtemp(prefix="deepspark-moto-"))
    log = folder / "moto.log"
    executable = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", "0"],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while not (found := _READY.search(log.read_text(errors="replace"))):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            text = log.read_text(errors="replace")
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"moto_server did not start within {timeout} s:\n{text[-2000:]}")
        time.sleep(0.05)
    endpoint = found.group(1)
    return S3Server(endpoint, _client_env(endpoint), process, folder)


def _client_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ALLOW_HTTP": "true",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the whole test session."""
    pytest.importorskip("moto", reason="moto[server] (the dev extra) is not installed")
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh bucket, with the server's variables in ``os.environ``; emptied and deleted after."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.create_bucket()
    yield bucket
    s3_server.delete_bucket(bucket.name)
