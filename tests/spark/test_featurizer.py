"""Pretrained networks on Spark: the ImageFeaturizer in a Pipeline with LogisticRegression (fit,
save, load, score; unreadable images skipped, kept or fatal as handleInvalid says), classify and
featurize jobs (a bad file is a row with its reason, never a failed job), and a logged pretrained
model scoring through deepspark's Spark UDF and SQL."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.conftest import SHARED_DATA
from tests.image_data import HYMENOPTERA, pattern_folder

pytestmark = pytest.mark.spark

BASE_0_35 = SHARED_DATA / "images" / "weights" / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"
# One network for every test here: built, shipped and loaded by the workers once.
FEATURIZER = {"weights": str(BASE_0_35), "baseOptions": {"alpha": 0.35}, "imageSize": 160}


@pytest.fixture(scope="module", autouse=True)
def one_partition_per_folder(spark):
    """Each small image folder read as one partition: one Python worker loads each network
    (on local[2] both workers would load and compile every network, seconds of CPU each)."""
    key = "spark.sql.files.minPartitionNum"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, "1")
    yield
    if previous is None:
        spark.conf.unset(key)
    else:
        spark.conf.set(key, previous)


@pytest.fixture(scope="module")
def ants_and_bees(tmp_path_factory):
    """A few real ants and bees per split, and a text file named .jpg among the training ants."""
    root = tmp_path_factory.mktemp("hymenoptera")
    for split, count in (("train", 12), ("val", 8)):
        for kind in ("ants", "bees"):
            folder = root / split / kind
            folder.mkdir(parents=True)
            for photo in sorted((HYMENOPTERA / split / kind).glob("*.jpg"))[:count]:
                shutil.copy(photo, folder / photo.name)
    (root / "train" / "ants" / "broken.jpg").write_text("not a photo")
    return root


def _labelled(spark, folder):
    from pyspark.sql import functions as F

    from deepspark.spark.images import read_image_files

    frame = read_image_files(spark, str(folder))
    return frame.withColumn("label", F.col("path").contains("/bees/").cast("double"))


def test_a_pipeline_with_logistic_regression_fits_saves_loads_and_scores(
    spark, ants_and_bees, tmp_path
):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import VectorUDT

    from deepspark.spark.featurizer import ImageFeaturizer

    train = _labelled(spark, ants_and_bees / "train")
    val = _labelled(spark, ants_and_bees / "val")
    featurizer = ImageFeaturizer(**FEATURIZER)
    pipeline = Pipeline(stages=[featurizer, LogisticRegression(maxIter=100, regParam=0.01)])
    fitted = pipeline.fit(train)  # the unreadable file is skipped, not a failed fit
    fitted.write().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert (tmp_path / "pipeline" / "stages").exists()
    assert loaded.stages[0].modelDirectory() != featurizer.modelDirectory()  # its own copy
    scored = loaded.transform(val)
    assert isinstance(scored.schema["features"].dataType, VectorUDT)
    first = fitted.transform(val).select("path", "prediction").toPandas().sort_values("path")
    second = scored.select("path", "label", "prediction").toPandas().sort_values("path")
    assert len(second) == 16 and first["prediction"].tolist() == second["prediction"].tolist()
    accuracy = float((second["label"] == second["prediction"]).mean())
    assert accuracy >= 0.75, accuracy  # 24 training photos: 0.875 with scikit-learn


def test_handle_invalid_keeps_with_the_reason_or_fails_naming_the_image(spark, ants_and_bees):
    from deepspark.errors import UserInputError
    from deepspark.spark.featurizer import ImageFeaturizer

    ants = spark.createDataFrame(
        pd.DataFrame({"path": [str(p) for p in sorted((ants_and_bees / "train/ants").iterdir())]})
    ).coalesce(1)
    kept = ImageFeaturizer(inputCol="path", handleInvalid="keep", **FEATURIZER).transform(ants)
    rows = kept.toPandas().set_index("path")
    broken = rows.loc[str(ants_and_bees / "train/ants/broken.jpg")]
    assert broken["features"] is None and "not an image" in broken["error"]
    good = rows.drop(index=broken.name)
    assert good["error"].isna().all() and {len(vector) for vector in good["features"]} == {1280}
    failing = ImageFeaturizer(inputCol="path", handleInvalid="error", **FEATURIZER)
    with pytest.raises(Exception, match=r"Image could not be read.*broken\.jpg"):
        failing.transform(ants).collect()
    with pytest.raises(UserInputError, match=r"handleInvalid must be one of skip, keep, error"):
        ImageFeaturizer(handleInvalid="drop")
    with pytest.raises(UserInputError, match=r"inputCol is not in the DataFrame"):
        ImageFeaturizer(**FEATURIZER).transform(ants)


def test_classify_and_featurize_jobs_report_bad_files_per_row(spark, tmp_path):
    from deepspark.cli.pretrained import classify as classify_command
    from deepspark.workflows.featurize import featurize

    folder = pattern_folder(tmp_path / "patterns", per_class=4, size=24)
    output = tmp_path / "classes"
    args = ["--data", str(folder), "--weights", "none", "--base-option", "alpha=0.35"]
    args += ["--image-size", "96", "--top", "2", "--spark", "--output", str(output), "--json"]
    done = CliRunner().invoke(classify_command, args)
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert document["rows"] == 10 and document["bad_images"] == 1  # 8 + a space + notes.jpg
    assert document["columns"] == ["path", "label_1", "label_2"] + [
        "probability_1",
        "probability_2",
        "error",
    ]
    classified = pd.read_parquet(output)
    bad = classified[classified["error"].notna()]
    assert bad["path"].str.endswith("notes.jpg").all() and bad["label_1"].isna().all()
    assert not list(tmp_path.glob("classes.__deepspark-*"))  # no staging folder left behind
    done = CliRunner().invoke(classify_command, args)
    assert isinstance(done.exception, Exception) and "Output already exists" in str(done.exception)

    settings = {"weights": str(BASE_0_35), "base_options": {"alpha": 0.35}, "image_size": 160}
    on_spark = featurize(folder, spark=True, output=tmp_path / "features", **settings)
    spark_rows = on_spark.toPandas()
    spark_rows["path"] = spark_rows["path"].str.replace("file:", "", regex=False)
    spark_rows = spark_rows.sort_values("path").reset_index(drop=True)
    local = featurize(folder, **settings).sort_values("path").reset_index(drop=True)
    assert spark_rows["path"].tolist() == local["path"].tolist()
    assert spark_rows["error"].notna().tolist() == local["error"].notna().tolist()
    good = local["error"].isna()
    np.testing.assert_allclose(
        np.stack(spark_rows.loc[good, "features"]), np.stack(local.loc[good, "features"]), rtol=1e-5
    )


def test_a_logged_pretrained_model_scores_through_spark_predict_and_sql(
    spark, ants_and_bees, workdir
):
    import deepspark
    from deepspark.spark import predict, register_model
    from deepspark.workflows.pretrained import log_pretrained

    model_uri = log_pretrained(weights=None, base_options={"alpha": 0.35}, image_size=96)
    images = _labelled(spark, ants_and_bees / "val" / "bees")
    scored = predict(images, model_uri).select("path", "prediction", "error").toPandas()
    assert len(scored) == 8 and scored["error"].isna().all()
    model = deepspark.load_model(model_uri)
    assert scored["prediction"].isin(model.schema.class_labels).all()
    register_model(spark, "imagenet", model_uri)
    images.createOrReplaceTempView("bees")
    by_sql = spark.sql("SELECT path, imagenet(content).prediction AS kind FROM bees").toPandas()
    assert (
        by_sql.sort_values("path")["kind"].tolist()
        == scored.sort_values("path")["prediction"].tolist()
    )
