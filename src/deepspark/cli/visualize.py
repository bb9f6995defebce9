"""``deepspark visualize``: parse, call ``deepspark.workflows.visualize``, print the files."""

from __future__ import annotations

import sys

import click

from deepspark.cli.output import emit_json, stdout_to_stderr


@click.command("visualize")
@click.option("--model", "model_uri", required=True, help="Image model URI (models:/, runs:/).")
@click.option("--image", required=True, help="Image file (JPEG, PNG, BMP, ...) to look at.")
@click.option("--output", "output_dir", required=True, help="Output folder (PNGs, index.html).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ URIs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def visualize(model_uri, image, output_dir, overwrite, tracking_uri, as_json) -> None:
    """Write an image model's first-layer filters and each conv block's feature maps as PNGs."""
    from deepspark.workflows.visualize import visualize as visualize_model

    with stdout_to_stderr():
        document = visualize_model(
            model_uri,
            image,
            output_dir=output_dir,
            overwrite=overwrite,
            tracking_uri=tracking_uri,
        )
    if as_json:
        emit_json(document, sys.stdout)
        return
    for layer in document["layers"]:
        shape = "x".join(str(size) for size in layer["shape"])
        click.echo(f"{layer['name']:<24}{shape}")
    click.echo(f"report  {document['output_dir']}/index.html")
