"""``deepspark sync``: log the end of a run that the MLflow tracking server missed."""

from __future__ import annotations

import sys

import click

from deepspark.cli.output import echo_train_result, emit_json, stdout_to_stderr


@click.command("sync")
@click.argument("run_id")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLflow's own default).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def sync_command(run_id, tracking_uri, as_json) -> None:
    """Log RUN_ID's kept epochs, final metrics and model once its tracking server is back."""
    from deepspark.workflows.train import finish_logging

    with stdout_to_stderr():
        result = finish_logging(run_id, tracking_uri=tracking_uri)
    if as_json:
        emit_json(result.to_dict(), sys.stdout)
        return
    echo_train_result(result)
