"""Image models on Spark: binaryFile sources (folders, globs), bytes or paths, a bad image is a
null prediction with its reason (never a failed job), byte-bounded batches, SQL, MLflow's UDF."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.errors import DataError, UserInputError
from tests.image_data import pattern_folder

pytestmark = pytest.mark.spark
CLASSES = ("centre", "horizontal", "vertical")


@pytest.fixture(scope="module")
def image_model(tmp_path_factory, mlflow_template):
    import mlflow

    root = tmp_path_factory.mktemp("spark-images")
    shutil.copy(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    folder = pattern_folder(root / "patterns", classes=CLASSES, per_class=20)
    result = deepspark.train(
        str(folder), tracking_uri=uri, filters=(4, 8), epochs=2, checkpoint_dir=str(root / "c")
    )
    mlflow.set_tracking_uri(uri)
    return folder, result.model_uri


def test_a_folder_scores_with_binary_file_and_matches_pandas(spark, image_model, tmp_path):
    from deepspark.spark import score_to_parquet

    folder, model_uri = image_model
    result = score_to_parquet(str(folder), model_uri, output=str(tmp_path / "out"))
    assert result.columns == ["path", "prediction", "probability", "error"]  # no image bytes
    scored = pd.read_parquet(tmp_path / "out").sort_values("path").reset_index(drop=True)
    assert len(scored) == result.rows == 62  # 60 images, a space in a name, one text file
    bad = scored[scored["error"].notna()]
    assert bad["path"].str.endswith("notes.jpg").all() and len(bad) == 1
    assert bad["prediction"].isna().all() and "not an image" in bad["error"].iloc[0]
    good = scored[scored["error"].isna()]
    local = deepspark.load_model(model_uri).predict(
        pd.DataFrame({"path": good["path"].str.replace("file:", "", regex=False)})
    )
    assert good["prediction"].tolist() == local["prediction"].tolist()
    spark_probabilities = np.array(
        [[row[label] for label in CLASSES] for row in good["probability"]]
    )
    np.testing.assert_allclose(spark_probabilities, local.filter(like="probability_"), rtol=1e-5)


def test_globs_sql_and_batch_limits(spark, image_model, tmp_path):
    from deepspark.spark import score_to_parquet

    folder, model_uri = image_model
    result = score_to_parquet(
        f"{folder}/vertical/*.png",
        model_uri,
        output=str(tmp_path / "sql"),
        sql="SELECT path, model(content).prediction AS kind, model(content).error AS e FROM data",
        batch_bytes=2**20,
    )
    scored = pd.read_parquet(tmp_path / "sql")
    assert result.rows == len(scored) == 16  # the PNGs of vertical/ (every fifth is a JPEG)
    assert scored["e"].isna().all() and set(scored["kind"]) <= set(CLASSES)
    assert spark.conf.get("spark.sql.execution.arrow.maxBytesPerBatch") == str(2**20)
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == str(2**20 // 768)


def test_dataframe_api_reads_a_path_column_and_rejects_wrong_types(spark, image_model):
    from deepspark.spark import predict

    folder, model_uri = image_model
    paths = [str(path) for path in sorted(folder.glob("*/*.png"))[:5]]
    frame = spark.createDataFrame(pd.DataFrame({"path": paths + [None], "id": range(6)}))
    rows = predict(frame, model_uri).orderBy("id").toPandas()
    assert list(rows.columns) == ["path", "id", "prediction", "probability", "error"]
    assert rows["error"][:5].isna().all() and "empty" in rows["error"][5]
    numbers = spark.createDataFrame(pd.DataFrame({"image": [1, 2]}))
    with pytest.raises(UserInputError, match=r"Column 'image' has Spark type bigint"):
        predict(numbers, model_uri)
    with pytest.raises(UserInputError, match=r"--batch-bytes must be at least 1 MB"):
        predict(frame, model_uri, batch_bytes=10)


def test_no_images_at_the_source_is_one_clear_error(spark, image_model, tmp_path):
    from deepspark.spark import score_to_parquet

    _, model_uri = image_model
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"(?i)no image files"):
        score_to_parquet(f"{tmp_path}/empty/*.jpg", model_uri, output=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_mlflow_spark_udf_scores_the_binary_column(spark, image_model):
    import mlflow

    from deepspark.spark.images import read_image_files

    folder, model_uri = image_model
    frame = read_image_files(spark, str(folder / "centre"))
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local")
    rows = frame.select("path", udf("content").alias("p")).select("path", "p.*").toPandas()
    # MLflow's UDF casts a string field holding some nulls with astype(str): null -> "None"
    # (deepspark's own UDF keeps real nulls, see above).
    bad = rows["path"].str.endswith("notes.jpg")
    assert len(rows) == 21 and "not an image" in rows.loc[bad, "error"].iloc[0]
    assert rows.loc[~bad, "error"].isin([None, "None"]).all()
    assert set(rows.loc[~bad, "prediction"]) <= set(CLASSES)


def test_image_files_come_in_whole_waves_of_full_partitions(spark, image_model):
    from deepspark.spark.images import image_partitions, read_image_files

    assert image_partitions(10_000, 2) == 4  # two waves of 2,500 files, not binaryFile's ~313
    assert image_partitions(6_000, 2) == 2 and image_partitions(5, 8) == 8
    assert image_partitions(0, 0) == 1
    folder, _ = image_model
    frame = read_image_files(spark, str(folder))
    assert frame.rdd.getNumPartitions() == spark.sparkContext.defaultParallelism
    assert frame.count() == len(list(folder.rglob("*.*")))  # nothing left out by coalescing


def test_a_folder_uri_without_a_glob_is_read_as_image_files_a_table_folder_as_a_table(
    spark, image_model, tmp_path
):
    from deepspark.spark import score_to_parquet

    folder, model_uri = image_model
    result = score_to_parquet(folder.as_uri(), model_uri, output=str(tmp_path / "by_uri"))
    assert result.rows == 62 and "path" in result.columns  # the folder's files, bytes dropped
    table = tmp_path / "table.parquet"  # a Parquet folder with a path column: a table
    table.mkdir()
    pd.DataFrame({"path": [str(folder / "vertical" / "001.png")]}).to_parquet(
        table / "part-0.parquet"
    )
    result = score_to_parquet(table.as_uri(), model_uri, output=str(tmp_path / "from_table"))
    scored = pd.read_parquet(tmp_path / "from_table")
    assert result.rows == len(scored) == 1 and scored["error"].isna().all()


def test_a_folder_listing_takes_image_suffixes_in_any_case(spark, tmp_path):
    from deepspark.spark.images import read_image_files

    for name in ("a.JpG", "b.png", "c.TIFF", "notes.txt"):
        (tmp_path / "photos" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / "x" / name).write_bytes(b"bytes")
    names = sorted(row.path.rsplit("/", 1)[-1] for row in read_image_files(
        spark, str(tmp_path / "photos")).select("path").collect())  # fmt: skip
    assert names == ["a.JpG", "b.png", "c.TIFF"]
