"""``explain``: one call from a model URI and a table to attributions, plots and an MLflow run."""

from __future__ import annotations

import dataclasses
import logging
import numbers
import time
from pathlib import Path
from typing import Any

import pandas as pd

from deepspark.errors import UserInputError
from deepspark.explain.base import (
    IMAGE,
    TABULAR,
    Explanation,
    check_method,
    explainer_class,
)
from deepspark.models.kinds import kind_named

logger = logging.getLogger("deepspark.explain")

DEFAULT_ROWS = 100
DEFAULT_BACKGROUND = 100


@dataclasses.dataclass(frozen=True)
class ExplainResult:
    """What ``explain`` produced.

    Attributes:
        explanation: The attributions (``.table()`` gives the output table).
        summary: Method, rows, seconds per row, ``max_additivity_error`` (``None`` for LIME),
            background source, output paths and the MLflow run id: what ``--json`` prints.
    """

    explanation: Explanation
    summary: dict[str, Any]

    @property
    def outputs(self) -> dict[str, str]:
        return self.summary.get("outputs", {})


def explain(
    model_uri: str,
    data: str | Path | pd.DataFrame,
    *,
    method: str = "gradient",
    rows: int = DEFAULT_ROWS,
    background: int = DEFAULT_BACKGROUND,
    seed: int = 0,
    output: str | Path | None = None,
    overwrite: bool = False,
    spark: bool = False,
    master: str | None = None,
    options: dict[str, Any] | None = None,
    explained_class: Any = None,
    log_to_mlflow: bool = True,
    tracking_uri: str | None = None,
) -> ExplainResult:
    """Explain a deepspark model's predictions for the first ``rows`` rows (or images) of data.

    Tables are explained per raw column; images pixel by pixel (a heatmap over each image).

    Args:
        model_uri: A deepspark model URI (``models:/...``, ``runs:/.../model``) or folder.
        data: Tables: a file, folder or glob of CSV / Parquet / JSON-lines files, a URI
            (``s3://bucket/prefix/``), a Delta table, a built-in dataset name, a pandas or Spark
            DataFrame, or with ``spark`` a Spark table name; a table larger than
            ``POOL_ROWS`` rows is not read whole. Images: an image folder (searched
            recursively), a glob, an image file, a Hadoop URI (with ``spark``), or a table with
            a ``path`` or ``image`` column.
        method: Tables: ``gradient`` (integrated gradients, additive), ``kernel`` or
            ``permutation`` (SHAP), or ``lime``. Images: ``gradcam`` (or ``gradcam++``),
            ``gradient`` (integrated gradients on pixels, additive), ``shap`` (SHAP's partition
            explainer with an image masker, additive) or ``lime`` (superpixels).
        rows: How many rows (images) to explain, from the top; all when the data has fewer.
        background: Background rows, sampled (seeded) from the model's training split when it
            can be re-derived, else from ``data`` (a large table: from a seeded sample of
            ``POOL_ROWS`` of its rows). Images: sampled from ``data``'s images (all
            of them when it has fewer), decoded only for the methods that need them.
        seed: Seeds the background sample and every per-row random choice.
        output: Folder for tables, plots and ``index.html`` (must be empty unless ``overwrite``).
        overwrite: Replace an existing, non-empty ``output`` folder.
        spark: Explain on Spark, in parallel over partitions (same results for the same seed).
        master: Spark master URL for a new session (default ``local[*]``).
        options: Method settings. Tables: ``baseline``, ``tolerance``, ``nsamples``,
            ``max_evals``, ``num_samples``. Images: ``layer`` (gradcam), ``baseline``
            (gradient: ``mean``, ``black``, ``white``, ``blur``), ``masker`` and ``max_evals``
            (shap), ``num_samples`` and ``segmentation`` (lime).
        explained_class: Explain this class's probability on every row instead of the predicted
            one (tables: binary models explain the second label by default).
        log_to_mlflow: Log the summary and the output folder as a child run of the model's run.
        tracking_uri: MLflow tracking URI for ``models:/`` and ``runs:/`` URIs and the new run.

    Returns:
        An ``ExplainResult``.

    Raises:
        UserInputError: Unknown method or one for the other kind of model, bad counts, missing
            columns (named), images given to a table model or a table without images to an
            image model, a layer or class the model does not have, an existing output folder.
        ModelNotFoundError: The model URI does not resolve.

    Example:
        >>> result = deepspark.explain(model_uri, "houses.csv", method="gradient", output="why")
        >>> result.summary["max_additivity_error"]
        >>> deepspark.explain(image_model_uri, "photos/", method="gradcam", output="cams")
    """
    from deepspark.explain.report import check_output_dir
    from deepspark.tracking.model import load_model
    from deepspark.tracking.run import use_tracking_uri

    check_method(method)
    _check_count("rows", rows)
    _check_count("background", background)
    if output is not None:
        check_output_dir(output, overwrite=overwrite)
    use_tracking_uri(tracking_uri)
    model = load_model(model_uri)
    explainer_type = explainer_class(method, model.kind)
    _check_data_kind(model, data)
    flow = _FLOWS[model.kind]
    run = _resolve(flow["spark" if spark else "local"])
    explanation, facts = run(
        model, explainer_type, data, rows=rows, background=background, seed=seed,
        options=options, explained_class=explained_class, master=master,
    )  # fmt: skip
    summary = _summary(model_uri, method, explanation, facts, seed=seed, spark=spark)
    summary["explained_class"] = None if explained_class is None else str(explained_class)
    if output is not None:
        write = _resolve(flow["report"])
        summary["outputs"] = write(explanation, output, summary=summary, overwrite=overwrite)
    if log_to_mlflow:
        summary["mlflow_run_id"] = log_explanation(model, model_uri, summary, output)
    return ExplainResult(explanation=explanation, summary=summary)


# Per kind of model: how its data is explained (one process, Spark), what its summary adds
# (the explained output, in words, and the kind's own fields) and how the folder is written.
# A new explanation method needs none of this, only a registered explainer.
_FLOWS = {
    TABULAR: {
        "local": "deepspark.explain.api:_explain_local",
        "spark": "deepspark.explain.api:_explain_spark",
        "summary": "deepspark.explain.api:_table_summary",
        "report": "deepspark.explain.report:write_report",
    },
    IMAGE: {
        "local": "deepspark.explain.images.flow:explain_images_local",
        "spark": "deepspark.explain.images.spark:explain_images_on_spark",
        "summary": "deepspark.explain.api:_image_summary",
        "report": "deepspark.explain.images.report:write_image_report",
    },
}


def _resolve(target: str):
    import importlib

    module_name, name = target.split(":")
    return getattr(importlib.import_module(module_name), name)


def _check_data_kind(model, data) -> None:
    """Images given to a table model: one clear line (the reverse is caught when the image
    column is looked for)."""
    from deepspark.explain.images.sources import is_image_source

    if not model.model_kind.reads_images and is_image_source(data):
        names = ", ".join(model.feature_names[:8])
        raise UserInputError(
            f"This model takes tables (columns {names}), and images were given; explain it on "
            f"a table (CSV, Parquet, JSON lines) or give an image model. Received: data="
            f"{str(data)!r}"
        )


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise UserInputError(f"--{name} must be a positive integer. Received: {name}={value!r}")


def limit_rows(total: int, rows: int) -> int:
    """Rows to explain; logs when the data has fewer rows than asked for."""
    if rows > total:
        logger.info("--rows %d is more than the data's %d rows: explaining all", rows, total)
        return total
    return rows


def _explain_local(model, explainer_type, data, *, rows, background, seed, options,
                   explained_class, master):  # fmt: skip
    from deepspark.explain.background import sample_background

    settings = {"seed": seed, "options": options, "explained_class": explained_class}
    explainer_type(model, None, **settings).validate()
    table = ExplainedTable.open(data, model, seed=seed)
    chosen = table.head(rows)
    sample = sample_background(model, table.pool, size=background, seed=seed)
    explainer = explainer_type(model, sample.rows, **settings)
    started = time.perf_counter()
    explanation = explainer.explain(chosen)
    seconds = time.perf_counter() - started
    facts = {"data_rows": table.rows, "background_source": sample.source, "seconds": seconds}
    return explanation, {**facts, "background": len(sample.rows)}


# The explained data is read whole up to this many rows (the rows to explain and the background
# pool, as always); a larger table gives its first rows, and when the background must come from
# it (the model's training split cannot be re-derived), a seeded uniform sample of this many
# rows drawn in one streamed pass.
POOL_ROWS = 100_000


class ExplainedTable:
    """The data being explained, read no further than the explanation needs.

    Attributes:
        pool: The background pool (a DataFrame, or ``SampledRows`` read on first use).
    """

    def __init__(self, frame: pd.DataFrame | None, source, pool):
        self.frame, self.source, self.pool = frame, source, pool

    @classmethod
    def open(cls, data, model, *, seed: int, limit: int = POOL_ROWS) -> ExplainedTable:
        """Resolve ``data`` (a DataFrame, path, folder, glob, URI, Delta table, built-in dataset
        name or Spark DataFrame) and check it has the model's columns.

        Raises:
            UserInputError: Missing columns (named), unreadable data.
        """
        from deepspark.data.schema import require_columns
        from deepspark.data.sources import PandasSource, resolve_source

        if isinstance(data, pd.DataFrame):
            require_columns(data, model.schema)
            return cls(data, None, data)
        source = resolve_source(data)
        require_columns(pd.DataFrame(columns=source.schema.names), model.schema)
        known = source.estimated_rows
        frame = None
        if isinstance(source, PandasSource) or (known is not None and known <= limit):
            frame = source.read_pandas()
        elif known is None:
            frame = source.head(limit + 1)
            frame = frame if len(frame) <= limit else None
        if frame is not None:
            return cls(frame, source, frame)
        logger.info("%s has more than %d rows: reading only what is explained", source, limit)
        return cls(None, source, SampledRows(source, model.feature_names, seed=seed, size=limit))

    @property
    def rows(self) -> int | None:
        """Rows in the data (``None`` when a large text source was never counted)."""
        if self.frame is not None:
            return len(self.frame)
        return self.source.estimated_rows or self.pool.total

    def head(self, rows: int) -> pd.DataFrame:
        """The first ``rows`` rows, all of them when the data has fewer."""
        if self.frame is not None:
            return self.frame.head(limit_rows(len(self.frame), rows))
        chosen = self.source.head(rows)
        limit_rows(len(chosen), rows)
        return chosen


class SampledRows:
    """A seeded uniform sample of ``size`` rows of a large source as a background pool (a
    length and rows by position), drawn in one streamed pass the first time it is used: each
    row gets a random key, the ``size`` smallest keys are kept, in source order.

    Attributes:
        total: Rows in the source, once the pass has run.
    """

    def __init__(self, source, columns: list[str], *, seed: int, size: int):
        self.source, self.columns, self.seed, self.size = source, columns, seed, size
        self.total: int | None = None
        self._frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.frame())

    def take(self, positions) -> pd.DataFrame:
        return self.frame().iloc[positions]

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = self._sample()
        return self._frame

    def _sample(self) -> pd.DataFrame:
        import numpy as np
        import pyarrow as pa

        rng = np.random.default_rng(self.seed)
        kept, keys, positions, seen = None, np.empty(0), np.empty(0, dtype=np.int64), 0
        for batch in self.source.iter_batches(columns=self.columns):
            table = pa.Table.from_batches([batch])
            merged = table if kept is None else pa.concat_tables([kept, table])
            keys = np.concatenate([keys, rng.random(batch.num_rows)])
            positions = np.concatenate([positions, np.arange(seen, seen + batch.num_rows)])
            seen += batch.num_rows
            if len(keys) > self.size:
                best = np.sort(np.argpartition(keys, self.size)[: self.size])
                merged, keys, positions = merged.take(best), keys[best], positions[best]
            kept = merged
        self.total = seen
        order = np.argsort(positions, kind="stable")
        return kept.take(order).to_pandas()


def _explain_spark(model, explainer_type, data, *, rows, background, seed, options,
                   explained_class, master):  # fmt: skip
    from deepspark.explain.spark import explain_on_spark

    explainer_type(
        model, None, seed=seed, options=options, explained_class=explained_class
    ).validate()
    return explain_on_spark(
        model, data, method=explainer_type.method, rows=rows, background=background,
        seed=seed, options=options, explained_class=explained_class, master=master,
    )  # fmt: skip


def _summary(model_uri, method, explanation, facts, *, seed, spark) -> dict:
    count = len(explanation)
    kind = getattr(explanation, "kind", TABULAR)
    unit = kind_named(kind).unit
    summary = {
        "method": method,
        "kind": kind,
        "model_uri": model_uri,
        "rows": count,
        "data_rows": facts["data_rows"],
        "background": facts["background"],
        "background_source": facts["background_source"],
        "seed": seed,
        "spark": spark,
        "seconds": round(facts["seconds"], 4),
        "seconds_per_row": facts["seconds"] / count if count else None,
        "rows_per_second": count / facts["seconds"] if facts["seconds"] > 0 else None,
        "max_additivity_error": explanation.max_additivity_error,
        "additivity_error_definition": (
            "max over rows of |sum(attributions) - (prediction - baseline)| / standard "
            f"deviation of the explained output over the background {unit}"
        ),
    }
    return {**summary, **_resolve(_FLOWS[kind]["summary"])(explanation)}


def _table_summary(explanation) -> dict:
    if explanation.explained_class is None:
        explained = "prediction (target units)"
    else:
        explained = (
            "probability of explained_class (binary: the second label; multiclass: predicted)"
        )
    return {"explained_output": explained}


def _image_summary(explanation) -> dict:
    explained = "probability of explained_class (the predicted class unless --class)"
    if explanation.details.get("score") == "logit":
        explained += "; the Grad-CAM map follows the class's logit"
    details = {
        key: value
        for key, value in explanation.details.items()
        if isinstance(value, str | int | float | bool | type(None) | list) and key != "bad_images"
    }
    return {
        "explained_output": explained,
        "bad_images": len(explanation.details.get("bad_images", [])),
        "details": details,
    }


def log_explanation(model, model_uri: str, summary: dict, output) -> str:
    """Log the summary (and the output folder) as a new MLflow run, a child of the model's run.

    A new run rather than artifacts in the training run: the training run stays as it finished,
    and each explanation (method, rows, seed) is its own record under it.

    Returns:
        The new run's id.
    """
    import mlflow

    from deepspark.tracking.run import get_run, tracked_run

    parent = model.metadata.get("run_id")
    experiment = "deepspark"
    try:
        parent_run = get_run(parent) if parent else None
    except UserInputError:
        parent_run = None
    if parent_run is not None:
        experiment = mlflow.get_experiment(parent_run.info.experiment_id).name
    with tracked_run(experiment=experiment, run_name=f"explain-{summary['method']}") as active:
        tags = {"deepspark.explain.method": summary["method"], "deepspark.model_uri": model_uri}
        if parent_run is not None:
            tags.update({"mlflow.parentRunId": parent, "deepspark.model_run_id": parent})
        mlflow.set_tags(tags)
        keys = ("method", "rows", "background", "seed", "spark", "background_source")
        params = {key: summary[key] for key in keys}
        if summary.get("explained_class") is not None:
            params["class"] = summary["explained_class"]
        for key, value in summary.get("details", {}).items():
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                params[key] = value
        mlflow.log_params(params)
        metrics = {"seconds_per_row": summary["seconds_per_row"]}
        if summary["max_additivity_error"] is not None:
            metrics["max_additivity_error"] = summary["max_additivity_error"]
        mlflow.log_metrics({key: value for key, value in metrics.items() if value is not None})
        if output is not None:
            mlflow.log_artifacts(str(output), "explanation")
        else:
            mlflow.log_dict(summary, "explanation/summary.json")
        return active.info.run_id
