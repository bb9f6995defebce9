"""Explanations across a Spark DataFrame: rows explained in parallel, one partition per task.

The driver reads the source, numbers its rows (``row_id`` = position, as in the single-process
path), samples the background once and broadcasts it; the model ships as in Spark scoring
(``deepspark.spark.udf``). Each Python worker loads the model once and explains its
rows with ``mapInPandas``. Every random choice is seeded per row, so the results equal the
single-process ones for the same seed. The explained rows' results are collected to the driver,
which writes the report: ``--rows`` bounds what is collected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time

import numpy as np
import pandas as pd

from deepspark.explain.base import (
    ADDITIVITY_SCALE,
    BASELINE,
    EXPLAINED_CLASS,
    PREDICTION,
    ROW_ID,
    Explainer,
    Explanation,
    explainer_class,
)

logger = logging.getLogger(__name__)

CONDITIONS = "lime_conditions_json"
_WORKER_EXPLAINERS: dict[str, Explainer] = {}


class _SparkRows:
    """An indexed Spark DataFrame as a background pool (rows fetched by position)."""

    def __init__(self, indexed, count: int):
        self.indexed, self.count = indexed, count

    def __len__(self) -> int:
        return self.count

    def take(self, positions: np.ndarray) -> pd.DataFrame:
        from pyspark.sql import functions as F

        wanted = [int(position) for position in positions]
        rows = self.indexed.filter(F.col(ROW_ID).isin(wanted)).toPandas()
        return rows.sort_values(ROW_ID).reset_index(drop=True)


def explain_on_spark(
    model, data, *, method, rows, background, seed, options, master, explained_class=None
):
    """Explain the first ``rows`` rows of a Spark source in parallel.

    Returns:
        The ``Explanation`` and facts for the summary (rows in the data, background source,
        seconds spent in the Spark job).

    Raises:
        UserInputError: Missing columns (named), unknown source, too large a background.
    """
    from deepspark.data.schema import require_columns
    from deepspark.explain.api import limit_rows
    from deepspark.explain.background import sample_background
    from deepspark.spark.session import get_session, read_source

    spark = get_session(master)
    if isinstance(data, pd.DataFrame):
        source = spark.createDataFrame(data)
    else:
        source = data if hasattr(data, "sparkSession") else read_source(spark, data)
    require_columns(pd.DataFrame(columns=source.columns), model.schema)
    indexed = _with_row_ids(source.select(*model.feature_names)).cache()
    total = indexed.count()
    count = limit_rows(total, rows)
    sample = sample_background(model, _SparkRows(indexed, total), size=background, seed=seed)
    payload = make_payload(
        spark, model, sample.rows, method=method, seed=seed, options=options,
        explained_class=explained_class,
    )  # fmt: skip
    shared = spark.sparkContext.broadcast(payload)
    from pyspark.sql import functions as F

    chosen = indexed.filter(F.col(ROW_ID) < count)
    chosen = chosen.repartition(spark.sparkContext.defaultParallelism)
    started = time.perf_counter()
    result = chosen.mapInPandas(
        _explain_batches(shared, model.feature_names), _output_schema(model)
    ).toPandas()
    seconds = time.perf_counter() - started
    shared.unpersist()
    raw = chosen.toPandas().sort_values(ROW_ID).reset_index(drop=True)
    indexed.unpersist()
    explanation = _explanation(model, method, result.sort_values(ROW_ID), raw)
    facts = {"data_rows": total, "background_source": sample.source, "seconds": seconds}
    return explanation, {**facts, "background": len(sample.rows)}


def _with_row_ids(frame):
    """Row positions in source order (0, 1, ...), without a pass through Python."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ordered = frame.withColumn("_order", F.monotonically_increasing_id())
    numbered = ordered.withColumn(ROW_ID, F.row_number().over(Window.orderBy("_order")) - 1)
    return numbered.drop("_order")


def make_payload(spark, model, background, *, method, seed, options, explained_class=None) -> dict:
    """What every worker needs; the model itself ships once per application with the scoring
    path's ``ship_model`` and loads once per Python worker with ``worker_model``.

    ``background``: raw rows (tables), decoded images (an array) or ``None``.
    """
    from deepspark.spark.udf import ship_model

    with tempfile.TemporaryDirectory() as folder:
        model.save(folder)
        model_name = ship_model(spark, folder)
    digest = hashlib.sha256(model_name.encode())
    if isinstance(background, pd.DataFrame):
        digest.update(pd.util.hash_pandas_object(background, index=False).to_numpy().tobytes())
    elif background is not None:
        digest.update(np.ascontiguousarray(background).tobytes())
    settings = [method, model.kind, seed, options, explained_class]
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return {
        "key": digest.hexdigest(),
        "model_name": model_name,
        "background": background,
        "method": method,
        "kind": model.kind,
        "seed": seed,
        "options": options,
        "explained_class": explained_class,
    }


def worker_explainer(payload: dict) -> Explainer:
    """The explainer of a broadcast payload, built once per Python worker."""
    key = payload["key"]
    if key not in _WORKER_EXPLAINERS:
        from deepspark.spark.udf import worker_model

        # worker_model sizes the framework's threads to the task's cores on first load.
        model = worker_model(payload["model_name"])
        explainer_type = explainer_class(payload["method"], payload["kind"])
        _WORKER_EXPLAINERS[key] = explainer_type(
            model,
            payload["background"],
            seed=payload["seed"],
            options=payload["options"],
            explained_class=payload["explained_class"],
        )
    return _WORKER_EXPLAINERS[key]


def _explain_batches(shared, names: list[str]):
    def explain_batches(batches):
        explainer = worker_explainer(shared.value)
        for batch in batches:
            if batch.empty:
                continue
            explanation = explainer.explain(batch[names], row_ids=batch[ROW_ID].to_numpy())
            table = explanation.table()
            table[ADDITIVITY_SCALE] = explanation.additivity_scale
            conditions = explanation.details.get("lime_conditions", {})
            table[CONDITIONS] = [
                json.dumps(conditions[int(row)]) if int(row) in conditions else None
                for row in table[ROW_ID]
            ]
            yield table

    return explain_batches


def _output_schema(model):
    from pyspark.sql import types as T

    fields = [
        T.StructField(ROW_ID, T.LongType()),
        T.StructField(PREDICTION, T.DoubleType()),
        T.StructField(BASELINE, T.DoubleType()),
    ]
    if model.task != "regression":
        fields.append(T.StructField(EXPLAINED_CLASS, T.StringType()))
    fields += [T.StructField(name, T.DoubleType()) for name in model.feature_names]
    fields += [
        T.StructField(ADDITIVITY_SCALE, T.DoubleType()),
        T.StructField(CONDITIONS, T.StringType()),
    ]
    return T.StructType(fields)


def _explanation(model, method: str, table: pd.DataFrame, raw: pd.DataFrame) -> Explanation:
    from deepspark.explain.tabular import TabularView

    view = TabularView(model)
    table = table.reset_index(drop=True)
    conditions = {
        int(row): [tuple(item) for item in json.loads(text)]
        for row, text in zip(table[ROW_ID], table[CONDITIONS], strict=True)
        if isinstance(text, str)
    }
    classes = None
    if EXPLAINED_CLASS in table:
        by_text = {str(label): label for label in model.schema.class_labels}
        classes = [by_text[text] for text in table[EXPLAINED_CLASS]]
    return Explanation(
        method=method,
        row_ids=table[ROW_ID].to_numpy(dtype=np.int64),
        attributions=table[model.feature_names].astype(np.float64),
        prediction=table[PREDICTION].to_numpy(dtype=np.float64),
        baseline=table[BASELINE].to_numpy(dtype=np.float64),
        explained_class=classes,
        features=view.decode(view.to_matrix(raw[model.feature_names])),
        additive=explainer_class(method).additive,
        additivity_scale=table[ADDITIVITY_SCALE].to_numpy(dtype=np.float64),
        details={"lime_conditions": conditions} if conditions else {},
    )
