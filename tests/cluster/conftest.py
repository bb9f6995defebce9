"""The multi-host test cluster: a Spark standalone master and two workers whose executors cannot
see the driver's folders (see harness.py), next to an S3 server (tests/object_store.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Until tests/conftest.py registers tests.object_store as a plugin (pytest refuses
# ``pytest_plugins`` in a conftest below the root one), import its fixtures here.
from tests.object_store import s3_bucket, s3_server  # noqa: F401


@pytest.fixture(scope="session")
def cluster_hidden_folders() -> list[Path]:
    """Folders, besides pytest's base temp folder, that executors must not see; override it in
    a conftest to hide more."""
    return []


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory, s3_server, cluster_hidden_folders) -> Iterator:  # noqa: F811
    """A standalone master + two workers (1 core, 2 GB each) for the whole session.

    Every test's ``tmp_path`` lives under pytest's base temp folder, which the workers cannot
    see; executors reach ``s3_server`` with its variables. Drivers run as subprocesses through
    ``spark_cluster.run_driver`` (this process already holds a local SparkContext).
    """
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    from tests.cluster.harness import start_cluster

    hidden = [tmp_path_factory.getbasetemp(), *cluster_hidden_folders]
    cluster = start_cluster(hidden=hidden, extra_env=s3_server.env)
    yield cluster
    cluster.stop()
