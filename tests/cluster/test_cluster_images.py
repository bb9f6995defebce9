"""Distributed image training on the multi-host harness: an ``s3://`` image folder, the store on
S3, two executors that cannot see the driver's folder. The shards hold the images' URIs (never a
driver-local path) and each rank decodes its own rows from S3."""

from __future__ import annotations

import json

import pytest

from tests.image_data import pattern_folder

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.distributed]


def _upload_images(bucket, folder) -> str:
    """The generated images under ``s3://bucket/images/<class>/``."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(f"{bucket.uri}/images")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with filesystem.open_output_stream(f"{root}/{path.relative_to(folder)}") as stream:
                stream.write(path.read_bytes())
    return f"{bucket.uri}/images/"


def _shard_references(bucket) -> list[str]:
    """The image references of every shard in the store."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    from deepspark.distributed.shards import IMAGE_SOURCES

    filesystem, root = fs.FileSystem.from_uri(f"{bucket.uri}/store/shards")
    selector = fs.FileSelector(root, recursive=True, allow_not_found=True)
    references = []
    for info in filesystem.get_file_info(selector):
        if info.path.endswith(".parquet"):
            table = pq.read_table(info.path, filesystem=filesystem, columns=[IMAGE_SOURCES])
            references += table.column(IMAGE_SOURCES).to_pylist()
    return references


def test_ranks_on_two_hosts_train_from_an_s3_image_folder(spark_cluster, s3_bucket, workdir):
    data = _upload_images(s3_bucket, pattern_folder(workdir / "images", per_class=16))
    args = [
        "-m", "deepspark", "train", "--data", data, "--image-size", "16", "--filters", "4,8",
        "--epochs", "2", "--batch-size", "8", "--workers", "2", "--launcher", "spark",
        "--store", f"{s3_bucket.uri}/store", "--json",
    ]  # fmt: skip
    env = {"DEEPSPARK_CHECKPOINT_DIR": "", "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    done = spark_cluster.run_driver(args, workdir, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:] + spark_cluster.logs()
    result = json.loads(done.stdout)
    assert (result["world_size"], result["launcher"]) == (2, "spark")
    assert result["epochs_completed"] == 2 and result["model_uri"]
    references = _shard_references(s3_bucket)
    assert references and all(reference.startswith(data) for reference in references)
