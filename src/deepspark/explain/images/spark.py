"""Image explanations across a Spark DataFrame: images explained in parallel, one partition
per task, the model loaded once per Python worker.

Image files are read with ``binaryFile`` on the executors (a folder recursively, a glob, a
Hadoop URI) and numbered in path order, as in the single-process path; a table (or DataFrame)
with an image or path column keeps its row order. The driver samples and decodes the background
images once (by position, as the single-process path does) and broadcasts them with the
explainer's settings; the model ships as in Spark scoring. Each worker explains its images
with ``mapInPandas`` and returns the attributions and the decoded image as ``.npy`` bytes;
every random choice is seeded per image, so results equal the single-process ones. The
explained images' results are collected to the driver, which writes the report: ``--rows``
bounds what is collected.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pandas as pd

from deepspark.data.image_inputs import BINARY_FILE_COLUMN, IMAGE_COLUMN, PATH_COLUMN
from deepspark.explain.base import BASELINE, EXPLAINED_CLASS, PREDICTION, ROW_ID
from deepspark.explain.images.explanation import PREDICTED_CLASS, SOURCE, ImageExplanation
from deepspark.explain.images.flow import make_explainer, require_background
from deepspark.explain.images.sources import (
    NO_BACKGROUND,
    background_positions,
    decode_background,
    is_file_source,
)

SCALE, ATTRIBUTIONS, IMAGE, PER_IMAGE, DETAILS, ERROR = (
    "additivity_scale", "attributions", "image", "per_image_json", "details_json", "error",
)  # fmt: skip
_FILE_PREFIX = "file:"


def explain_images_on_spark(model, explainer_type, data, *, rows, background, seed, options,
                            explained_class, master):  # fmt: skip
    """Explain the first ``rows`` images of a Spark source in parallel.

    Returns:
        The ``ImageExplanation`` and facts for the summary.

    Raises:
        UserInputError: A source without images, a layer or class the model does not have.
    """
    from pyspark.sql import functions as F

    from deepspark.explain.api import limit_rows
    from deepspark.explain.spark import make_payload
    from deepspark.spark.images import image_batch_limits
    from deepspark.spark.session import get_session

    explainer = make_explainer(
        model, explainer_type, seed=seed, options=options, explained_class=explained_class
    )
    spark = get_session(master)
    indexed, total = _indexed_images(spark, model, data)
    count = limit_rows(total, rows)
    source = NO_BACKGROUND
    if explainer.needs_background:
        positions = [int(position) for position in background_positions(total, background, seed)]
        picked = indexed.filter(F.col(ROW_ID).isin(positions)).toPandas().sort_values(ROW_ID)
        sample = decode_background(model, picked.drop(columns=ROW_ID).reset_index(drop=True))
        explainer.background, source = sample.pixels, sample.source
        require_background(explainer)
    image_batch_limits(spark, model.schema, None)
    payload = make_payload(
        spark, model, explainer.background, method=explainer.method, seed=seed,
        options=options, explained_class=explained_class,
    )  # fmt: skip
    shared = spark.sparkContext.broadcast(payload)
    chosen = indexed.filter(F.col(ROW_ID) < count)
    chosen = chosen.repartition(spark.sparkContext.defaultParallelism)
    started = time.perf_counter()
    columns = [name for name in chosen.columns if name != ROW_ID]
    result = chosen.mapInPandas(_explain_batches(shared, columns), _output_schema()).toPandas()
    seconds = time.perf_counter() - started
    shared.unpersist()
    explanation = _explanation(model, explainer_type, result.sort_values(ROW_ID))
    facts = {
        "data_rows": total,
        "background": 0 if explainer.background is None else len(explainer.background),
        "background_source": source,
        "seconds": seconds,
    }
    return explanation, facts


def _indexed_images(spark, model, data):
    """The source with ``row_id`` and only the columns the model reads, and its row count."""
    from pyspark.sql import functions as F

    from deepspark.explain.spark import _with_row_ids
    from deepspark.spark.columns import quote
    from deepspark.spark.images import image_input_column, read_image_files
    from deepspark.spark.session import read_source

    if isinstance(data, pd.DataFrame):
        frame = spark.createDataFrame(data)
    elif hasattr(data, "sparkSession"):
        frame = data
    elif is_file_source(data):
        return _numbered_files(spark, read_image_files(spark, str(data)))
    else:
        frame = read_source(spark, data)
    image_input_column(frame, model.schema)  # validates: one clear line when there is none
    candidates = [model.feature_names[0], IMAGE_COLUMN, BINARY_FILE_COLUMN, PATH_COLUMN]
    keep = [name for name in dict.fromkeys(candidates) if name in frame.columns]
    indexed = _with_row_ids(frame.select(*[F.col(quote(name)) for name in keep])).cache()
    return indexed, indexed.count()


def _numbered_files(spark, files):
    """``binaryFile`` rows numbered by path (local paths without ``file:``, as listed)."""
    from pyspark.sql import functions as F

    local = F.col(PATH_COLUMN).startswith(_FILE_PREFIX + "/")
    files = files.withColumn(
        PATH_COLUMN,
        F.when(local, F.expr(f"substring({PATH_COLUMN}, {len(_FILE_PREFIX) + 1})")).otherwise(
            F.col(PATH_COLUMN)
        ),
    )
    paths = sorted(row[0] for row in files.select(PATH_COLUMN).collect())
    numbers = spark.createDataFrame(
        pd.DataFrame({PATH_COLUMN: paths, ROW_ID: np.arange(len(paths), dtype=np.int64)})
    )
    indexed = files.join(F.broadcast(numbers), on=PATH_COLUMN)
    return indexed.select(ROW_ID, PATH_COLUMN, BINARY_FILE_COLUMN), len(paths)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _from_npy(payload: bytes) -> np.ndarray:
    return np.load(io.BytesIO(payload), allow_pickle=False)


def _explain_batches(shared, columns: list[str]):
    def explain_batches(batches):
        from deepspark.explain.spark import worker_explainer

        explainer = worker_explainer(shared.value)
        for batch in batches:
            if batch.empty:
                continue
            explanation = explainer.explain(batch[columns], row_ids=batch[ROW_ID].to_numpy())
            yield _rows(explanation)

    return explain_batches


def _rows(explanation: ImageExplanation) -> pd.DataFrame:
    """One output row per image of a batch; a row per bad image with its ``error``."""
    table = explanation.table()
    details = json.dumps(
        {key: value for key, value in explanation.details.items() if key != "bad_images"},
        default=str,
    )
    good = pd.DataFrame(
        {
            ROW_ID: table[ROW_ID],
            SOURCE: table[SOURCE],
            PREDICTED_CLASS: table[PREDICTED_CLASS],
            EXPLAINED_CLASS: table[EXPLAINED_CLASS],
            PREDICTION: table[PREDICTION],
            BASELINE: table[BASELINE],
            SCALE: explanation.additivity_scale.astype(np.float64),
            ATTRIBUTIONS: [_npy(values) for values in explanation.attributions],
            IMAGE: [_npy(image) for image in explanation.images],
            PER_IMAGE: [
                json.dumps({name: values[position].item() for name, values in
                            explanation.per_image.items()})
                for position in range(len(explanation))
            ],
            DETAILS: details,
            ERROR: None,
        }
    )  # fmt: skip
    listed = explanation.details.get("bad_images", [])
    if not listed:
        return good
    bad = pd.DataFrame({name: pd.Series([None] * len(listed), dtype=object) for name in good})
    for name in (PREDICTION, BASELINE, SCALE):
        bad[name] = np.nan
    bad[ROW_ID] = [item["row_id"] for item in listed]
    bad[SOURCE] = [item["source"] for item in listed]
    bad[ERROR] = [item["error"] for item in listed]
    return pd.concat([good.astype({ERROR: object}), bad], ignore_index=True)


def _output_schema():
    from pyspark.sql import types as T

    text = (SOURCE, PREDICTED_CLASS, EXPLAINED_CLASS)
    numbers = (PREDICTION, BASELINE, SCALE)
    return T.StructType(
        [T.StructField(ROW_ID, T.LongType())]
        + [T.StructField(name, T.StringType()) for name in text]
        + [T.StructField(name, T.DoubleType()) for name in numbers]
        + [T.StructField(name, T.BinaryType()) for name in (ATTRIBUTIONS, IMAGE)]
        + [T.StructField(name, T.StringType()) for name in (PER_IMAGE, DETAILS, ERROR)]
    )


def _explanation(model, explainer_type, result: pd.DataFrame) -> ImageExplanation:
    spec = model.schema.image
    by_text = {str(label): label for label in model.schema.class_labels}
    failed = result[ERROR].notna()
    good, bad = result[~failed].reset_index(drop=True), result[failed]
    details = json.loads(good[DETAILS].iloc[0]) if len(good) else {}
    if len(bad):
        details["bad_images"] = [
            {"row_id": int(row[ROW_ID]), "source": row[SOURCE], "error": row[ERROR]}
            for _, row in bad.iterrows()
        ]
    per_image = [json.loads(text) for text in good[PER_IMAGE]]
    names = per_image[0].keys() if per_image else []
    empty = np.zeros((0, spec.height, spec.width, spec.channels), dtype=np.uint8)
    attributions = [_from_npy(payload) for payload in good[ATTRIBUTIONS]]
    return ImageExplanation(
        method=explainer_type.method,
        row_ids=good[ROW_ID].to_numpy(dtype=np.int64),
        sources=[value if isinstance(value, str) else None for value in good[SOURCE]],
        images=np.stack([_from_npy(payload) for payload in good[IMAGE]]) if len(good) else empty,
        attributions=np.stack(attributions) if attributions else empty[..., 0].astype(np.float32),
        prediction=good[PREDICTION].to_numpy(dtype=np.float64),
        predicted_class=[by_text[text] for text in good[PREDICTED_CLASS]],
        explained_class=[by_text[text] for text in good[EXPLAINED_CLASS]],
        baseline=good[BASELINE].to_numpy(dtype=np.float64),
        additive=explainer_type.additive,
        additivity_scale=good[SCALE].to_numpy(dtype=np.float64),
        per_image={name: np.array([item[name] for item in per_image]) for name in names},
        details=details,
    )
