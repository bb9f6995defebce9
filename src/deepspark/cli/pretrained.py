"""``deepspark classify``, ``featurize`` and ``log-pretrained``: pretrained ImageNet networks.

Thin: parse the options, call ``deepspark.workflows``, print the result (or one JSON object).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from deepspark.cli.output import emit_json, stdout_to_stderr
from deepspark.config import parse_options

_SHOWN_ROWS = 50


def _network_options(command):
    """--model, --weights, --base-option and --image-size, shared by the three commands."""
    decorators = [
        click.option(
            "--model",
            "model_name",
            default="mobilenet_v2",
            show_default=True,
            help="A keras.applications network, any spelling (mobilenet_v2, ResNet50...).",
        ),
        click.option(
            "--weights",
            default="imagenet",
            show_default=True,
            help="imagenet (Keras downloads them), a local .weights.h5 file, or none.",
        ),
        click.option(
            "--base-option",
            "base_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="Network constructor option, e.g. alpha=0.35 (repeatable).",
        ),
        click.option("--image-size", help="Input size: 224 or 224,160 (default: native)."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _spark_options(command):
    decorators = [
        click.option("--spark", "use_spark", is_flag=True, help="Run on Spark; write Parquet."),
        click.option("--master", help="Spark master URL (default: DEEPSPARK_SPARK_MASTER)."),
        click.option("--batch-bytes", type=int, help="Bytes of images per batch (--spark)."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _weights(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _check_spark(use_spark: bool, output: str | None, master, batch_bytes) -> None:
    if use_spark and output is None:
        raise click.UsageError("--spark writes a Parquet folder: give --output.")
    if not use_spark and (master is not None or batch_bytes is not None):
        given = "--master" if master is not None else "--batch-bytes"
        raise click.UsageError(f"{given} needs --spark.")


def _summary(result, started: float) -> dict[str, Any]:
    """Rows and unreadable images of a pandas or Spark result."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        rows, bad = len(result), int(result["error"].notna().sum())
        columns = list(map(str, result.columns))
    else:
        rows, bad = result.count(), result.filter(result["error"].isNotNull()).count()
        columns = list(result.columns)
    seconds = round(time.perf_counter() - started, 3)
    return {"rows": rows, "bad_images": bad, "columns": columns, "seconds": seconds}


@click.command("classify")
@click.option("--data", required=True, help="Image folder, glob, image file or table of paths.")
@_network_options
@click.option("--top", type=int, default=5, show_default=True, help="Classes kept per image.")
@click.option("--output", help="Output .csv / .parquet / .jsonl (--spark: a Parquet folder).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@_spark_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def classify(data, model_name, weights, base_option, image_size, top, output, overwrite, **rest):
    """Top-k ImageNet classes of every image: path, label_1..k, probability_1..k, error."""
    from deepspark.workflows.classify import classify as classify_images

    as_json, use_spark = rest.pop("as_json"), rest.pop("use_spark")
    _check_spark(use_spark, output, rest["master"], rest["batch_bytes"])
    started = time.perf_counter()
    with stdout_to_stderr():
        result = classify_images(
            data,
            model=model_name,
            weights=_weights(weights),
            top=top,
            base_options=parse_options(base_option),
            image_size=image_size,
            output=output,
            overwrite=overwrite,
            spark=use_spark,
            **rest,
        )
        document = {"model": model_name, "data": data, "output": output, "top": top}
        document.update(_summary(result, started))
    if output is None:
        document["results"] = result.to_dict("records")
    if as_json:
        emit_json(document, sys.stdout)
        return
    if output is None:
        _print_top(result, top)
    click.echo(
        f"classified {document['rows']} images ({document['bad_images']} unreadable)"
        + (f" -> {output}" if output else "")
    )


def _print_top(result, top: int) -> None:
    from pathlib import Path

    for record in result.head(_SHOWN_ROWS).to_dict("records"):
        name = Path(str(record.get("path", ""))).name or "-"
        if record["error"] is not None:
            click.echo(f"{name}: {record['error']}")
            continue
        ranked = ", ".join(
            f"{record[f'label_{rank}']} {record[f'probability_{rank}']:.3f}"
            for rank in range(1, top + 1)
        )
        click.echo(f"{name}: {ranked}")
    if len(result) > _SHOWN_ROWS:
        click.echo(f"... {len(result) - _SHOWN_ROWS} more (use --output)")


@click.command("featurize")
@click.option("--data", required=True, help="Image folder, glob, image file or table of paths.")
@_network_options
@click.option("--layer", help="Layer by name (pooled); default: the last block, pooled.")
@click.option("--output", required=True, help="Output .parquet / .jsonl (--spark: a folder).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@_spark_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def featurize(data, model_name, weights, base_option, image_size, layer, output, **rest):
    """One feature vector per image: path, features (float32 list), error."""
    from deepspark.workflows.featurize import featurize as featurize_images

    as_json, use_spark = rest.pop("as_json"), rest.pop("use_spark")
    _check_spark(use_spark, output, rest["master"], rest["batch_bytes"])
    started = time.perf_counter()
    with stdout_to_stderr():
        result = featurize_images(
            data,
            model=model_name,
            weights=_weights(weights),
            layer=layer,
            base_options=parse_options(base_option),
            image_size=image_size,
            output=output,
            spark=use_spark,
            **rest,
        )
        document = {"model": model_name, "data": data, "output": output, "layer": layer}
        document.update(_summary(result, started))
    if as_json:
        emit_json(document, sys.stdout)
        return
    click.echo(
        f"featurized {document['rows']} images ({document['bad_images']} unreadable) -> {output}"
    )


@click.command("log-pretrained")
@_network_options
@click.option("--experiment", default="deepspark", show_default=True, help="MLflow experiment.")
@click.option("--run-name", help="MLflow run name (default: pretrained-<network>).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLflow's own default).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def log_pretrained(model_name, weights, base_option, image_size, as_json, **tracking) -> None:
    """Log a pretrained ImageNet classifier to MLflow as a deepspark image model."""
    from deepspark.workflows.pretrained import log_pretrained as log_model

    with stdout_to_stderr():
        model_uri = log_model(
            model_name,
            weights=_weights(weights),
            base_options=parse_options(base_option),
            image_size=image_size,
            **tracking,
        )
    if as_json:
        emit_json({"model": model_name, "model_uri": model_uri, **tracking}, sys.stdout)
        return
    click.echo(f"model uri:  {model_uri}")
