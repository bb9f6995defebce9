"""``deepspark explain``: parse, call ``deepspark.explain``, print the summary (or JSON)."""

from __future__ import annotations

import sys

import click

from deepspark.cli.output import emit_json, format_metric, stdout_to_stderr

# Kept here rather than imported from deepspark.explain so `--help` stays fast.
METHODS_HELP = (
    "Tables: gradient (integrated gradients, additive), kernel, permutation (SHAP), lime. "
    "Images: gradcam, gradcam++, gradient (integrated gradients on pixels, additive), shap "
    "(partition explainer, image masker), lime (superpixels)."
)
BASELINES = ["mean", "background", "black", "white", "blur"]


@click.command("explain")
@click.option("--model", "model_uri", required=True, help="Model URI (models:/..., runs:/...).")
@click.option(
    "--data",
    required=True,
    help="Tables: CSV / Parquet / JSON-lines path (or table, --spark). Images: a folder, glob, "
    "image file or Hadoop URI (--spark), or a table with a path / image column.",
)
@click.option("--method", default="gradient", show_default=True, help=METHODS_HELP)
@click.option(
    "--baseline",
    type=click.Choice(BASELINES),
    help="gradient only. Tables: path from the background mean (default, fast) or from every "
    "background row (SHAP's baseline). Images: from the mean background image (default), "
    "a black or white one, or the image blurred.",
)
@click.option(
    "--layer", help="gradcam only: the layer to explain (default: the last convolution's output)."
)
@click.option(
    "--class",
    "explained_class",
    help="Explain this class instead of the predicted one (binary tables: the second label).",
)
@click.option("--rows", type=int, default=100, show_default=True, help="Rows/images to explain.")
@click.option("--background", type=int, default=100, show_default=True, help="Background rows.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every sample.")
@click.option("--output", required=True, help="Output folder (tables, plots, index.html).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--spark", "use_spark", is_flag=True, help="Explain in parallel on Spark.")
@click.option("--master", help="Spark master URL (default: DEEPSPARK_SPARK_MASTER or local[*]).")
@click.option("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ URIs.")
@click.option("--no-mlflow", is_flag=True, help="Do not log the explanation to MLflow.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def explain(
    model_uri, data, baseline, layer, use_spark, master, tracking_uri, no_mlflow, as_json,
    **settings,
):  # fmt: skip
    """Explain a model's predictions: per raw column (tables) or per pixel (images)."""
    from deepspark.explain.api import explain as explain_model

    if master and not use_spark:
        raise click.UsageError("--master needs --spark.")
    if baseline and settings["method"] != "gradient":
        raise click.UsageError("--baseline is an option of --method gradient.")
    if layer and settings["method"] not in ("gradcam", "gradcam++"):
        raise click.UsageError("--layer is an option of --method gradcam and gradcam++.")
    options = {"baseline": baseline, "layer": layer}
    with stdout_to_stderr():
        result = explain_model(
            model_uri,
            data,
            spark=use_spark,
            master=master,
            tracking_uri=tracking_uri,
            log_to_mlflow=not no_mlflow,
            options={key: value for key, value in options.items() if value} or None,
            **settings,
        )
    summary = result.summary
    document = {
        key: summary.get(key)
        for key in (
            "method", "kind", "model_uri", "rows", "data_rows", "background",
            "background_source", "seed", "spark", "seconds_per_row", "max_additivity_error",
            "explained_output", "explained_class", "bad_images", "details", "outputs",
            "mlflow_run_id",
        )
        if key in summary or key in ("mlflow_run_id", "outputs")
    }  # fmt: skip
    if as_json:
        emit_json(document, sys.stdout)
        return
    unit = "images" if summary.get("kind") == "image" else "rows"
    click.echo(f"explained {summary['rows']} {unit} with {summary['method']}")
    click.echo(f"seconds per row       {format_metric(summary['seconds_per_row'])}")
    if summary["max_additivity_error"] is not None:
        click.echo(f"max additivity error  {summary['max_additivity_error']:.2e}")
    click.echo(f"report                {summary['outputs']['index_html']}")
