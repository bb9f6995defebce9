"""``deepspark register`` and ``deepspark models``: the MLflow model registry (aliases)."""

from __future__ import annotations

import sys

import click

from deepspark.cli.output import emit_json, format_metric, stdout_to_stderr


@click.command("register")
@click.option(
    "--model",
    "model_uri",
    required=True,
    help="The logged deepspark model: models:/m-<id>, runs:/<run_id>/model, models:/NAME@alias.",
)
@click.option("--name", required=True, help="Registered model name (created when new).")
@click.option(
    "--alias",
    "aliases",
    multiple=True,
    help="Alias to point at the new version, e.g. champion (repeatable or comma-separated).",
)
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLflow's own default).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def register_command(model_uri, name, aliases, tracking_uri, as_json) -> None:
    """Register a logged model as a new version of NAME; load it as models:/NAME@alias."""
    from deepspark.config import parse_aliases
    from deepspark.tracking.registry import register_model

    with stdout_to_stderr():
        version = register_model(
            model_uri, name, aliases=parse_aliases(aliases), tracking_uri=tracking_uri
        )
    if as_json:
        emit_json(version.to_dict(), sys.stdout)
        return
    click.echo(f"name:       {version.name}")
    click.echo(f"version:    {version.version}")
    click.echo(f"aliases:    {', '.join(version.aliases) or '-'}")
    click.echo(f"model uri:  {version.model_uri}")


@click.command("models")
@click.option("--name", help="Only this registered model.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLflow's own default).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def models_command(name, tracking_uri, as_json) -> None:
    """List registered models: versions, aliases, the source run's main metric, creation time."""
    from deepspark.tracking.registry import list_models

    with stdout_to_stderr():
        found = list_models(name, tracking_uri=tracking_uri)
    if as_json:
        emit_json({"models": found}, sys.stdout)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="registered models")
    for column in ("name", "version", "aliases", "metric", "run id", "created"):
        table.add_column(column, no_wrap=column in ("name", "run id"))
    for model in found:
        for version in model["versions"]:
            metric = version["metric"]
            shown = f"{metric} {format_metric(version['metric_value'])}" if metric else "-"
            table.add_row(
                model["name"],
                str(version["version"]),
                ", ".join(version["aliases"]) or "-",
                shown,
                version["run_id"] or "-",
                version["created"],
            )
    Console(width=max(Console().width, 140)).print(table)
