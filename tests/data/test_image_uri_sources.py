"""Image sources on URIs: one resolver lists a local folder and the same images on S3 (moto's
server) the same way; images decode from ``s3://`` with bad ones counted; a missing bucket is
one clear error; classify, featurize and training read an ``s3://`` image folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepspark.cli.main import main
from deepspark.data.image_decode import decode_images
from deepspark.data.image_sources import (
    is_image_folder,
    is_image_glob,
    list_image_folder,
    list_image_glob,
    read_image_bytes,
    resolve_images,
)
from deepspark.errors import DataError
from tests.image_data import pattern_folder
from tests.object_store import s3_server  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def images(s3_server, tmp_path_factory):  # noqa: F811
    """A local image folder (two classes, 12 images each, a text file named ``notes.jpg``, a
    name with a space, a hidden file) and the same files uploaded to a bucket, with the
    server's variables set for the module."""
    local = pattern_folder(tmp_path_factory.mktemp("uri") / "images", per_class=12)
    (local / "vertical" / "_skipped.png").write_bytes((local / "vertical" / "001.png").read_bytes())
    (local / "README.txt").write_text("not an image")
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            key = f"images/{path.relative_to(local).as_posix()}"
            client.put_object(Bucket=bucket.name, Key=key, Body=path.read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        for name, value in s3_server.env.items():
            patch.setenv(name, value)
        yield local, f"{bucket.uri}/images", s3_server
    s3_server.delete_bucket(bucket.name)


def _relative(listing: pd.DataFrame, root: str) -> pd.DataFrame:
    return listing.assign(path=listing["path"].str.slice(len(root.rstrip("/")) + 1))


def test_a_local_folder_and_the_same_images_on_s3_list_the_same(images):
    local, uri, _ = images
    here, there = resolve_images(local), resolve_images(uri + "/")
    assert (here.kind, there.kind) == ("folder", "folder")
    assert not here.remote and there.remote
    assert there.paths[0].startswith(uri + "/")
    pd.testing.assert_frame_equal(_relative(here.rows, str(local)), _relative(there.rows, uri))
    assert len(here.rows) == 26  # 24 images, a name with a space, notes.jpg; not _skipped.png
    assert set(here.rows["label"]) == {"horizontal", "vertical"}
    assert is_image_folder(uri) and is_image_folder(f"file://{local}")
    pd.testing.assert_frame_equal(
        _relative(list_image_folder(local), str(local)), _relative(list_image_folder(uri), uri)
    )
    local_glob = list_image_glob(f"{local}/*/*.png")
    remote_glob = list_image_glob(f"{uri}/*/*.png")
    pd.testing.assert_frame_equal(_relative(local_glob, str(local)), _relative(remote_glob, uri))
    assert is_image_glob(f"{uri}/*/*.jpg") and not is_image_glob(f"{uri}/*.txt")
    assert resolve_images(f"{uri}/README.txt") is None  # a file that is no image: a table's


def test_split_folders_have_the_same_rules_on_s3(images, tmp_path):
    local, uri, server = images
    bucket = uri.split("/")[2]
    for split, label in (("train", "a"), ("train", "b"), ("valid", "a"), ("test", "b")):
        folder = tmp_path / "split" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(local / "vertical" / "001.png", folder / "x.png")
    (tmp_path / "split" / "loose.png").write_bytes((local / "vertical" / "002.png").read_bytes())
    client = server.client()
    for path in sorted((tmp_path / "split").rglob("*.png")):
        key = f"split/{path.relative_to(tmp_path / 'split').as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    here = list_image_folder(tmp_path / "split")
    there = list_image_folder(f"s3://{bucket}/split")
    assert here[["label", "split"]].values.tolist() == [
        ["a", "train"],
        ["b", "train"],
        ["a", "val"],
        ["b", "test"],
    ]
    pd.testing.assert_frame_equal(
        _relative(here, str(tmp_path / "split")), _relative(there, f"s3://{bucket}/split")
    )
    # Every image is listed for scoring; training uses the labelled ones in split folders.
    assert len(resolve_images(f"s3://{bucket}/split").rows) == 5


def test_images_decode_from_s3_like_from_disk_and_a_bad_one_is_counted(images):
    local, uri, _ = images
    here = resolve_images(local).paths
    there = resolve_images(uri).paths
    missing = f"{uri}/vertical/missing.png"
    from_disk = decode_images(here, size=(16, 16))
    from_s3 = decode_images([*there, missing], size=(16, 16))
    np.testing.assert_array_equal(from_disk.images, from_s3.images)
    assert from_disk.bad_count == 1 and from_s3.bad_count == 2
    reasons = {there[index] if index < len(there) else missing: r for index, r in from_s3.errors}
    assert "not an image" in reasons[next(p for p in there if p.endswith("notes.jpg"))]
    assert reasons[missing].startswith("file not found") and missing in reasons[missing]
    spaced = next(path for path in there if path.endswith("with space.png"))
    assert read_image_bytes(spaced) == (local / "vertical" / "with space.png").read_bytes()
    with pytest.raises(DataError, match=r"Bad image 's3://.*/missing.png': file not found"):
        decode_images([missing], size=(16, 16), on_bad="fail")


def test_a_missing_bucket_or_key_is_one_clear_error(images):
    _, uri, _ = images
    with pytest.raises(DataError, match=r"bucket .*'deepspark-no-such-bucket' does not exist"):
        resolve_images("s3://deepspark-no-such-bucket/images/")
    with pytest.raises(DataError, match=r"Data not found.*check the URI"):
        resolve_images(f"{uri}/no-such-folder/")
    assert not is_image_folder("s3://deepspark-no-such-bucket/images/")


def test_an_fsspec_filesystem_lists_and_decodes_too(images):
    import fsspec

    local, _, _ = images
    memory = fsspec.filesystem("memory")
    for path in sorted((local / "horizontal").glob("00*.png"))[:3]:
        memory.pipe(f"/deepspark-test/cls/{path.name}", path.read_bytes())
    try:
        listing = resolve_images("memory://deepspark-test")
        assert listing.kind == "folder" and listing.rows["label"].tolist() == ["cls"] * 3
        assert decode_images(listing.paths, size=(8, 8)).images.shape == (3, 8, 8, 3)
    finally:
        memory.rm("/deepspark-test", recursive=True)


def _invoke(capsys, *args: str) -> tuple[int, str, str]:
    """The ``deepspark`` command in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_cli_classify_and_featurize_an_s3_folder(images, tmp_path, capsys):
    _, uri, _ = images
    small = ["--weights", "none", "--base-option", "alpha=0.35", "--image-size", "32"]
    output = tmp_path / "classes.jsonl"
    code, out, err = _invoke(
        capsys, "classify", "--data", uri, *small, "--top", "2", "--output", str(output), "--json"
    )
    assert code == 0, err[-2000:]
    document = json.loads(out)
    assert document["rows"] == 26 and document["bad_images"] == 1
    rows = pd.read_json(output, lines=True)
    assert rows["path"].str.startswith(uri).all()
    assert set(rows["label"]) == {"horizontal", "vertical"}
    features = tmp_path / "features.parquet"
    code, _, err = _invoke(
        capsys, "featurize", "--data", f"{uri}/", *small, "--output", str(features)
    )
    assert code == 0, err[-2000:]
    written = pd.read_parquet(features)
    assert len(written) == 26 and written["error"].notna().sum() == 1
    assert written["features"].dropna().map(len).eq(1280).all()
    code, out, err = _invoke(capsys, "classify", "--data", "s3://deepspark-no-such-bucket/x/")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "bucket or container 'deepspark-no-such-bucket' does not exist" in err


def test_training_from_an_s3_folder_logs_a_model_that_scores_s3_paths(images, workdir):
    import deepspark

    local, uri, _ = images
    result = deepspark.train(
        uri, image_size=(16, 16), filters=(8, 16), epochs=15, patience=15, lr=0.005, seed=0
    )
    assert result.model_uri and result.metrics
    model = deepspark.load_model(result.model_uri)
    paths = [path for path in resolve_images(uri).paths if path.endswith(".png")]
    predicted = model.predict(pd.DataFrame({"path": paths}))
    assert predicted["error"].isna().all() and len(predicted) == len(paths)
    accuracy = (predicted["prediction"] == [Path(path).parent.name for path in paths]).mean()
    assert accuracy > 0.7  # stripes: learnable in a few epochs
    assert Image.open(local / "vertical" / "001.png").size == (16, 16)


@pytest.mark.spark
def test_spark_lists_an_s3_folder_and_the_executors_read_the_bytes(images, spark):
    from deepspark.spark.images import file_count, is_image_files_source, read_image_files

    local, uri, server = images
    environment = spark.sparkContext.environment  # what Python workers start with
    saved = dict(environment)
    environment.update(server.env)  # as a cluster's executors have the store's variables
    try:
        assert is_image_files_source(uri, spark)
        frame = read_image_files(spark, uri)
        rows = frame.toPandas()
    finally:
        environment.clear()
        environment.update(saved)
    assert file_count(frame) == 26 and len(rows) == 26
    for path, content in zip(rows["path"], rows["content"], strict=True):
        assert bytes(content) == (local / path[len(uri) + 1 :]).read_bytes()
