"""``deepspark <command>``: exit 0 ok, 2 bad input or usage (one line on stderr), 1 internal."""

from __future__ import annotations

import os
import signal
import sys
import traceback

import click

from deepspark.cli.explain import explain as explain_command
from deepspark.cli.lr_find import lr_find as lr_find_command
from deepspark.cli.output import (
    configure_logging,
    echo_train_result,
    emit_json,
    format_metric,
    stdout_to_stderr,
)
from deepspark.cli.pretrained import classify as classify_command
from deepspark.cli.pretrained import featurize as featurize_command
from deepspark.cli.pretrained import log_pretrained as log_pretrained_command
from deepspark.cli.registry import models_command, register_command
from deepspark.cli.serve import serve_command
from deepspark.cli.sync import sync_command
from deepspark.cli.tune import tune as tune_command
from deepspark.cli.visualize import visualize as visualize_command

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _fail(message: str, code: int) -> None:
    click.echo(f"deepspark: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deepspark")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Every epoch and library progress bars on stderr."
)
@click.option(
    "--keras-backend",
    help="Keras backend for every command: jax (default) or torch; KERAS_BACKEND works too.",
)
def cli(quiet: bool, verbose: bool, keras_backend: str | None) -> None:
    """Scalable deep learning on Apache Spark: Keras 3 training, MLflow tracking, scoring."""
    configure_logging(quiet=quiet, verbose=verbose)
    if keras_backend is not None:
        from deepspark._backend import use_backend

        use_backend(keras_backend)


@cli.command()
@click.option(
    "--data",
    help="CSV / Parquet / JSON-lines path, built-in dataset (diabetes), or an image folder "
    "(one subfolder per class) or table of image paths / bytes.",
)
@click.option("--target", help="Column to predict (image folders: label).")
@click.option(
    "--model",
    "model_name",
    help="tabular_net, mlp, linear (linear / logistic regression: coefficients in the result), "
    "cnn or transfer (default: tabular_net for tables, cnn for images, transfer with --base, "
    "mlp with --activation linear).",
)
@click.option("--task", help="regression, binary or multiclass (default: inferred).")
@click.option("--exclude", help="Comma-separated columns to leave out of the features.")
@click.option("--hidden", help="Hidden layer sizes, e.g. 64,32.")
@click.option(
    "--activation",
    help="sigmoid, tanh, relu, leaky_relu, prelu, elu, selu, gelu, swish, linear.",
)
@click.option("--dropout", type=float, help="Dropout rate after each hidden layer.")
@click.option("--batch-norm/--no-batch-norm", default=None, help="Batch normalization.")
@click.option("--optimizer", help="sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad.")
@click.option("--lr", type=float, help="Learning rate (default: the optimizer's usual).")
@click.option("--loss", help="mse, mae or huber (regression); crossentropy (classification).")
@click.option("--epochs", type=int, help="Most epochs; early stopping usually ends sooner.")
@click.option("--batch-size", type=int, help="Rows per gradient step.")
@click.option("--val-fraction", type=float, help="Validation share (default 0.15).")
@click.option("--test-fraction", type=float, help="Test share, scored once (default 0.15).")
@click.option("--seed", type=int, help="Seed for split, initialisation and shuffling.")
@click.option(
    "--patience", type=int, help="Early-stopping patience in epochs (default 30; images 10)."
)
@click.option("--reduce-lr/--no-reduce-lr", default=None, help="Halve LR when validation stalls.")
@click.option("--categorical-encoding", help="auto, one_hot or embedding.")
@click.option("--experiment", help="MLflow experiment (default: deepspark).")
@click.option("--run-name", help="MLflow run name.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLflow's own default).")
@click.option("--checkpoint-dir", help="Folder for per-epoch checkpoints.")
@click.option(
    "--store",
    help="Where shards, checkpoints and the rank-0 model live: a folder or s3://, gs://, "
    "hdfs://, abfs:// URI every host reaches (default: $DEEPSPARK_STORE or ./.deepspark/store).",
)
@click.option(
    "--max-memory",
    "max_memory_mb",
    type=float,
    help="MB of encoded training data held in memory; more is streamed (default: RAM/4).",
)
@click.option("--workers", type=int, help="Data-parallel workers (batch size is per worker).")
@click.option("--launcher", help="local, spark or horovod (default: local when --workers > 1).")
@click.option(
    "--collectives",
    help="How workers communicate: jax, torch or horovod (default: follows the Keras backend).",
)
@click.option("--backend", hidden=True, help="Deprecated spelling of --collectives.")
@click.option("--max-restarts", type=int, help="Restarts after a worker dies (default 2).")
@click.option(
    "--startup-timeout",
    type=float,
    help="Seconds for every worker to start and connect, then fail naming the missing ones "
    "(default: $DEEPSPARK_STARTUP_TIMEOUT or 300; 0: wait forever).",
)
@click.option(
    "--watchdog",
    type=float,
    help="Seconds a worker may finish no batch before the run fails naming it "
    "(default: $DEEPSPARK_WATCHDOG or 1800; 0: off).",
)
@click.option("--scale-lr/--no-scale-lr", default=None, help="LR x workers (default on).")
@click.option("--warmup-epochs", type=int, help="Epochs of LR warmup to the scaled rate.")
@click.option("--keras-backend", help="jax (default) or torch; KERAS_BACKEND works too.")
@click.option("--image-size", help="Images are resized to this: 224 or 224,160 (default: <=128).")
@click.option("--filters", help="CNN filters per conv block, e.g. 32,64,128.")
@click.option("--augment/--no-augment", default=None, help="Flip/rotate/zoom/contrast in training.")
@click.option(
    "--on-bad-image", help="skip (count, list, leave out; default) or fail at a bad image file."
)
@click.option("--base", help="Pretrained base for transfer learning: mobilenet_v2, resnet50...")
@click.option("--weights", help="The base's weights: imagenet (default), a local file, or none.")
@click.option(
    "--base-option",
    "base_options",
    multiple=True,
    help="Constructor option of the base, KEY=VALUE (repeatable), e.g. alpha=0.35.",
)
@click.option("--fine-tune-layers", help="Then unfreeze the base's top N layers (or all).")
@click.option("--fine-tune-lr", type=float, help="Fine-tuning learning rate (default lr/10).")
@click.option("--fine-tune-epochs", type=int, help="Most fine-tuning epochs (default 10).")
@click.option("--class-weight", help="balanced: weight each class's loss by its rarity.")
@click.option(
    "--ensemble-size", type=int, help="tabular_net: ensemble members sharing most weights (8)."
)
@click.option("--numeric-embedding", help="tabular_net: periodic (default) or none.")
@click.option(
    "--embedding-sigma",
    type=float,
    help="tabular_net: initial frequency scale of the periodic embeddings (default auto: 0.1 "
    "for a table of at most 3,000 rows, else 3.0).",
)
@click.option("--weight-decay", type=float, help="Decoupled weight decay (default: none).")
@click.option("--lr-schedule", help="plateau (default), cosine (to 0 over --epochs) or constant.")
@click.option(
    "--bagging",
    metavar="K|auto",
    help="A bagged k-fold ensemble of K networks (tables in memory); 1: one network "
    "(default auto: 5 for a table of at most 2,000 training + validation rows, "
    "$DEEPSPARK_AUTO_BAGGING_ROWS; else 1).",
)
@click.option("--register", help="Register the logged model as a new version of this name.")
@click.option(
    "--alias",
    "aliases",
    multiple=True,
    help="With --register: alias for the new version, e.g. champion (repeatable or a,b).",
)
@click.option("--tensorboard", help="Folder for TensorBoard event files (also logged to the run).")
@click.option(
    "--keep-checkpoints",
    is_flag=True,
    default=None,
    help="Log the best and last epoch's model as checkpoints/best.keras and last.keras "
    "(load: deepspark.load_checkpoint(run_id, which='best')).",
)
@click.option("--config", "config_file", type=click.Path(), help="TOML file with settings.")
@click.option("--resume", help="Run id of a killed run to continue from its last epoch.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def train(config_file, resume, as_json, model_name, **options) -> None:
    """Train a Keras network on a table or images; track it in MLflow; log the model."""
    from deepspark.workflows.train import train as train_model

    settings = {name: value for name, value in options.items() if value not in (None, ())}
    if "backend" in settings:
        click.echo(
            "deepspark: warning: --backend is deprecated; use --collectives (how workers "
            "communicate; --keras-backend chooses jax or torch).",
            err=True,
        )
        settings.setdefault("collectives", settings.pop("backend"))
    with stdout_to_stderr():
        if resume:
            result = train_model(resume=resume, tracking_uri=settings.get("tracking_uri"))
        else:
            if "data" not in settings and config_file is None:
                raise click.UsageError("Missing option '--data' (a file path or 'diabetes').")
            result = train_model(config_file=config_file, model=model_name, **settings)
    document = result.to_dict()
    if as_json:
        emit_json(document, sys.stdout)
        return
    echo_train_result(result)
    if result.coefficients is not None:
        _echo_coefficients(result.coefficients, result.intercept)
    if result.registered:
        registered = result.registered
        aliases = f" ({', '.join(registered['aliases'])})" if registered["aliases"] else ""
        click.echo(f"registered: {registered['model_uri']}{aliases}")


def _echo_coefficients(coefficients: dict, intercept) -> None:
    """A linear model's coefficients, one per line (per class for multiclass)."""
    per_class = isinstance(intercept, dict)
    groups = coefficients.items() if per_class else [(None, coefficients)]
    for label, values in groups:
        prefix = f"[{label}] " if per_class else ""
        bias = intercept[label] if per_class else intercept
        click.echo(f"{prefix}intercept{'':<9}{format_metric(bias)}")
        for column, value in values.items():
            click.echo(f"{prefix}{column:<18}{format_metric(value)}")


@cli.command()
@click.option("--model", "model_uri", required=True, help="Model URI (models:/..., runs:/...).")
@click.option(
    "--data",
    required=True,
    help="CSV / Parquet / JSON-lines file, folder or glob, a URI (s3://bucket/prefix/), a Delta "
    "table (delta:PATH), or an image folder; with --spark also a table, or image files as a "
    "glob / Hadoop URI ('photos/*.jpg').",
)
@click.option(
    "--output",
    required=True,
    help="Output file (.csv, .parquet, .jsonl), a path or URI (s3://bucket/scored.parquet); "
    "--spark: folder.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ URIs.")
@click.option(
    "--max-memory",
    "max_memory_mb",
    type=float,
    help="MB of data scored in memory; larger data is streamed in batches (default: RAM/4).",
)
@click.option("--spark", "use_spark", is_flag=True, help="Score with Spark; write Parquet.")
@click.option("--master", help="Spark master URL (default: DEEPSPARK_SPARK_MASTER or local[*]).")
@click.option("--batch-rows", type=int, help="Rows per Arrow batch sent to the model (--spark).")
@click.option(
    "--batch-bytes", type=int, help="Image models: bytes per batch (--spark; default 64 MB)."
)
@click.option("--sql", help="With --spark: a query over view --view using function --function.")
@click.option(
    "--function", "function_name", help="SQL function name of the model (default: model)."
)
@click.option("--view", help="SQL view name of --data (default: data).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def predict(
    model_uri, data, output, overwrite, tracking_uri, max_memory_mb, use_spark, as_json,
    **spark_options,
):  # fmt: skip
    """Score a table or images: output = input columns + prediction column(s).

    Image models add `error` (why an image could not be scored; its prediction is empty).
    Data larger than --max-memory is streamed to the output in batches; there, a row with text
    in a numeric column gets an empty prediction and is counted (`bad_rows`).

    With --spark the job runs on Spark and writes a Parquet folder; --sql runs a query instead,
    e.g. --sql "SELECT *, model(struct(*)) AS price FROM data".
    """
    from deepspark.tracking.run import use_tracking_uri

    spark_options = {name: value for name, value in spark_options.items() if value is not None}
    given = set(spark_options)
    if given and not use_spark:
        raise click.UsageError(f"--{sorted(given)[0].replace('_', '-')} needs --spark.")
    if use_spark and max_memory_mb is not None:
        raise click.UsageError("--max-memory is for scoring without --spark.")
    with stdout_to_stderr():
        use_tracking_uri(tracking_uri)
        if use_spark:
            document = _predict_spark(model_uri, data, output, overwrite, spark_options)
        else:
            document = _predict_pandas(model_uri, data, output, overwrite, max_memory_mb)
    if as_json:
        emit_json(document, sys.stdout)
        return
    click.echo(f"scored {document['rows']} rows -> {output}")
    if document.get("bad_rows"):
        click.echo(
            f"{document['bad_rows']} rows had text in a numeric column (empty predictions): "
            + "; ".join(document["bad_examples"])
        )


def _predict_pandas(model_uri, data, output, overwrite, max_memory_mb) -> dict:
    from deepspark.tracking.predict import PredictSummary
    from deepspark.tracking.predict import predict as predict_table

    scored = predict_table(
        model_uri, data, output=output, overwrite=overwrite, max_memory_mb=max_memory_mb
    )
    document = {"model_uri": model_uri, "data": data, "output": output}
    if isinstance(scored, PredictSummary):
        return {**document, **scored.to_dict(), "output": output, "streamed": True}
    return {
        **document,
        "rows": len(scored),
        "columns": list(map(str, scored.columns)),
        "streamed": False,
        "bad_rows": 0,
    }


def _predict_spark(model_uri, data, output, overwrite, spark_options) -> dict:
    from deepspark.spark.jobs import score_to_parquet

    result = score_to_parquet(data, model_uri, output=output, overwrite=overwrite, **spark_options)
    return {"model_uri": model_uri, "data": data, "engine": "spark", **result.to_dict()}


@cli.command()
@click.option("--experiment", default="deepspark", show_default=True, help="MLflow experiment.")
@click.option("--tracking-uri", help="MLflow tracking URI.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def runs(experiment, tracking_uri, limit, as_json) -> None:
    """List runs with status and key metrics, newest first."""
    from deepspark.tracking.runs import list_runs

    with stdout_to_stderr():
        found = list_runs(experiment, tracking_uri=tracking_uri, limit=limit)
    if as_json:
        emit_json({"experiment": experiment, "runs": found}, sys.stdout)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"experiment: {experiment}")
    table.add_column("run id", no_wrap=True, min_width=32)
    for column in ("name", "status", "started", "val_rmse / val_acc", "test"):
        table.add_column(column)
    for run in found:
        metrics = run["metrics"]
        val = metrics.get("val_rmse", metrics.get("val_accuracy"))
        test = metrics.get("test_rmse", metrics.get("test_accuracy"))
        table.add_row(
            run["run_id"],
            run["run_name"] or "",
            run["status"],
            run["start_time"],
            format_metric(val),
            format_metric(test),
        )
    Console(width=max(Console().width, 140)).print(table)


@cli.command()
@click.argument("topic")
@click.option("--output", "output_dir", required=True, help="Folder for the lesson's PNG plots.")
@click.option("--image", help="convolutions: a photo to slide the kernels over.")
@click.option("--epochs", type=int, help="gan: passes over the digits (default 30).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def learn(topic, output_dir, image, epochs, as_json) -> None:
    """Run a lesson: activations, losses, optimizers, splits, approximation, convolutions (NumPy),
    gan (a Keras DCGAN on scikit-learn's digits, tracked in MLflow)."""
    from deepspark.fundamentals.lessons import run_lesson

    with stdout_to_stderr():
        document = run_lesson(topic, output_dir, image=image, epochs=epochs)
    if as_json:
        emit_json(document, sys.stdout)
        return
    click.echo(f"lesson: {topic}")
    for name, value in document.items():
        if name in ("topic", "plots"):
            continue
        values = value if isinstance(value, list) else [value]
        shown = ", ".join(
            f"{item:.4g}" if isinstance(item, float) else str(item) for item in values
        )
        click.echo(f"  {name:<42}{shown}")
    for plot in document["plots"]:
        click.echo(f"plot: {plot}")


cli.add_command(explain_command)
cli.add_command(visualize_command)
cli.add_command(lr_find_command)
cli.add_command(classify_command)
cli.add_command(featurize_command)
cli.add_command(log_pretrained_command)
cli.add_command(tune_command)
cli.add_command(serve_command)
cli.add_command(register_command)
cli.add_command(models_command)
cli.add_command(sync_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; maps errors to exit codes."""
    from deepspark.errors import (
        MissingDependencyError,
        StorageFullError,
        UserInputError,
        WorkerTimeoutError,
    )

    # A shell starts background jobs with SIGINT ignored, and some job runners start processes
    # with it blocked; deepspark always turns SIGINT into KeyboardInterrupt so an interrupted run
    # ends KILLED.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cli.main(args=argv, prog_name="deepspark", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("interrupted", EXIT_INTERRUPTED)
    except click.UsageError as error:
        command = f" {error.ctx.info_name}" if error.ctx and error.ctx.parent else ""
        _fail(f"{error.format_message()} (see: deepspark{command} --help)", EXIT_USAGE)
    except click.ClickException as error:
        _fail(error.format_message(), EXIT_USAGE)
    except (UserInputError, MissingDependencyError) as error:
        _fail(" ".join(str(error).split()), EXIT_USAGE)
    except WorkerTimeoutError as error:  # late or stuck ranks: the line names them and why
        _fail(" ".join(str(error).split()), EXIT_INTERNAL)
    except Exception as error:  # noqa: BLE001  anything else is deepspark's fault
        if StorageFullError.caused(error):  # a full disk met outside deepspark's own writers
            _fail(_disk_full_line(error), EXIT_USAGE)
        if os.environ.get("DEEPSPARK_DEBUG"):
            traceback.print_exc()
        _fail(
            f"internal error: {type(error).__name__}: {error} "
            f"(set DEEPSPARK_DEBUG=1 for the traceback)",
            EXIT_INTERNAL,
        )
    sys.exit(EXIT_OK)


def _disk_full_line(error: BaseException) -> str:
    """The one line for a full disk that no deepspark writer turned into ``StorageFullError``
    (an MLflow artifact copy, a report folder): the file it was writing and the fix."""
    while error is not None and getattr(error, "filename", None) is None:
        error = error.__cause__ or error.__context__
    path = getattr(error, "filename2", None) or getattr(error, "filename", None)
    where = f" writing {path}" if path else ""
    return (
        f"The disk is full{where} (No space left on device); free space there, or write "
        "elsewhere (--output, --store, $DEEPSPARK_CHECKPOINT_DIR, the MLflow experiment's "
        "artifact location); a failed train run goes on with: deepspark train --resume RUN_ID"
    )
