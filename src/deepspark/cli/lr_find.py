"""``deepspark lr-find``: parse, call ``deepspark.workflows.lr_find``, print the suggestion."""

from __future__ import annotations

import sys

import click

from deepspark.cli.output import emit_json, stdout_to_stderr


@click.command("lr-find")
@click.option(
    "--data",
    required=True,
    help="CSV / Parquet / JSON-lines path, built-in dataset (diabetes), or an image folder.",
)
@click.option("--target", help="Column to predict (image folders: label).")
@click.option("--model", "model_name", help="mlp or cnn (default: mlp for tables, cnn for images).")
@click.option("--hidden", help="Hidden layer sizes, e.g. 64,32.")
@click.option("--dropout", type=float, help="Dropout rate after each hidden layer.")
@click.option("--optimizer", help="sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad.")
@click.option("--batch-size", type=int, help="Rows per gradient step.")
@click.option("--image-size", help="Images are resized to this: 224 or 224,160 (default: <=128).")
@click.option("--filters", help="CNN filters per conv block, e.g. 32,64,128.")
@click.option("--seed", type=int, help="Seed for split, initialisation and shuffling.")
@click.option("--steps", type=int, default=200, show_default=True, help="Batches in the test.")
@click.option("--min-lr", type=float, default=1e-7, show_default=True, help="First rate.")
@click.option("--max-lr", type=float, default=10.0, show_default=True, help="Last rate.")
@click.option("--output", help="PNG file for the loss-against-rate plot (always logged to MLflow).")
@click.option("--experiment", help="MLflow experiment (default: deepspark).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLflow's own default).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def lr_find(model_name, steps, min_lr, max_lr, output, as_json, **options) -> None:
    """Suggest a learning rate: train a copy of the network for a few hundred batches while the
    rate grows from --min-lr to --max-lr, and plot the loss against the rate.

    The suggestion is the rate where the smoothed loss falls fastest, before its minimum (or
    the rate at the minimum / 10 when it never falls); the output names the rule used.
    """
    from deepspark.workflows.lr_find import find_learning_rate

    settings = {name: value for name, value in options.items() if value is not None}
    with stdout_to_stderr():
        document = find_learning_rate(
            steps=steps, min_lr=min_lr, max_lr=max_lr, output=output, model=model_name, **settings
        )
    if as_json:
        emit_json(document, sys.stdout)
        return
    click.echo(f"suggested lr:  {document['suggested_lr']:.3g}")
    click.echo(f"rule:          {document['rule']}")
    stopped = " (the loss diverged: stopped early)" if document["stopped_early"] else ""
    click.echo(
        f"steps:         {document['steps']}, lr {min_lr:.3g} to {document['last_lr']:.3g}{stopped}"
    )
    click.echo(f"plot:          {document['plot'] or document['plot_uri']}")
    click.echo(f"run id:        {document['run_id']}")
