"""``deepspark tune``: parse, call ``deepspark.workflows.tune``, print the best configuration."""

from __future__ import annotations

import sys

import click

from deepspark.cli.output import emit_json, format_metric, stdout_to_stderr


@click.command("tune")
@click.option("--data", help="CSV / Parquet / JSON-lines path or built-in dataset (diabetes).")
@click.option("--target", help="Column to predict.")
@click.option("--trials", type=int, help="Trials in total (default 20; resume: the first run's).")
@click.option("--timeout", type=float, help="Seconds after which no new trial starts.")
@click.option(
    "--metric",
    help="Objective on the validation split: rmse, mae, mse (regression; rmse default), "
    "log_loss (classification default), accuracy, auc.",
)
@click.option(
    "--space",
    "space_entries",
    multiple=True,
    help="Search space entry KEY=SPEC (repeatable), added to or replacing the default: "
    "lr=1e-4:1e-1:log, layers=1:3, activation=relu,gelu, dropout=0 (fixed), "
    "hidden=64,32|128,64.",
)
@click.option(
    "--set",
    "fixed_entries",
    multiple=True,
    help="A fixed TrainConfig setting KEY=VALUE (repeatable), e.g. activation=gelu or "
    "weight_decay=none; a searched key given here leaves the space.",
)
@click.option("--spark", is_flag=True, help="Run trials as Spark tasks, several at a time.")
@click.option("--master", help="Spark master URL (default: DEEPSPARK_SPARK_MASTER or local[*]).")
@click.option("--parallelism", type=int, help="Trials at a time on Spark (default: Spark's).")
@click.option("--resume", help="Parent run id of an interrupted search to continue.")
@click.option("--storage", help="Optuna storage URL (default: a sqlite file in .deepspark/tune).")
@click.option("--model", "model_name", help="Registered network name (default: mlp).")
@click.option("--task", help="regression, binary or multiclass (default: inferred).")
@click.option("--exclude", help="Comma-separated columns to leave out of the features.")
@click.option(
    "--epochs", type=int, help="Most epochs per trial; early stopping and pruning end sooner."
)
@click.option("--batch-size", type=int, help="Rows per gradient step (fixed unless in --space).")
@click.option("--patience", type=int, help="Early-stopping patience in epochs.")
@click.option("--val-fraction", type=float, help="Validation share: selects the configuration.")
@click.option("--test-fraction", type=float, help="Test share, scored once by the best.")
@click.option("--seed", type=int, help="Seed for the split, initialisation and the sampler.")
@click.option("--config", "config_file", type=click.Path(), help="TOML file with fixed settings.")
@click.option("--experiment", help="MLflow experiment (default: deepspark).")
@click.option("--run-name", help="Parent MLflow run name (default: tune).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLflow's own default).")
@click.option(
    "--tensorboard",
    help="Folder for TensorBoard event files: one subfolder per trial (trial-000...) and best.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def tune(space_entries, fixed_entries, model_name, as_json, **options) -> None:
    """Search hyperparameters (Optuna: TPE, median pruning on per-epoch validation metrics),
    scoring every trial on the validation split; retrain the best configuration and score the
    test split once. Each trial is an MLflow child run of the search's run.

    Default space: layers 1:4, width 16:512:log (hidden = width x layers), dropout 0:0.5,
    lr 1e-4:1e-2:log, and weight_decay 1e-6:1e-2:log, numeric_embedding (embeddings on/off) and
    ensemble_size 1,8,32 (k) when TrainConfig has them (see deepspark.tuning.space).
    """
    from deepspark.tuning.spec import scalar
    from deepspark.workflows.tune import tune as run_search

    space = _parse_entries(space_entries, "--space", "lr=1e-4:1e-1:log")
    fixed = _parse_entries(fixed_entries, "--set", "activation=gelu")
    settings = {name: value for name, value in options.items() if value is not None}
    for key, text in fixed.items():
        value = scalar(text)
        if value is None:  # KEY=none: the default (None) stays, out of the space
            space.setdefault(key, None)
        else:
            settings[key] = value
    if not settings.get("resume") and "data" not in settings and "config_file" not in settings:
        raise click.UsageError("Missing option '--data' (or --resume RUN_ID).")
    with stdout_to_stderr():
        result = run_search(space=space or None, model=model_name, **settings)
    if as_json:
        emit_json(result.to_dict(), sys.stdout)
        return
    counts = result.trials
    settings_text = " ".join(
        f"{key}={_plain(value)}" for key, value in result.best_settings.items()
    )
    click.echo(f"search run id:  {result.run_id}")
    click.echo(
        f"trials:         {sum(counts.values())} ({counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['failed']} failed)"
        + (", stopped by --timeout" if result.timed_out else "")
    )
    click.echo(
        f"best trial:     {result.best_trial}: validation {result.metric} "
        f"{format_metric(result.best_value)}"
    )
    click.echo(f"best settings:  {settings_text}")
    click.echo(f"model uri:      {result.model_uri}")
    for name in sorted(result.metrics):
        if name.startswith("test_"):
            click.echo(f"{name + ':':<15} {format_metric(result.metrics[name])}")


def _parse_entries(entries, option: str, example: str) -> dict[str, str]:
    from deepspark.errors import UserInputError

    parsed = {}
    for entry in entries:
        key, equals, text = entry.partition("=")
        if not equals or not key.strip() or not text.strip():
            raise UserInputError(
                f"Invalid {option}: give KEY=VALUE such as {example}. Received: {entry!r}"
            )
        parsed[key.strip().replace("-", "_")] = text.strip()
    return parsed


def _plain(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
