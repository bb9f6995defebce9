"""Console output for the CLI: logs and progress on stderr, results (or JSON) on stdout."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any


def configure_logging(*, quiet: bool, verbose: bool = False) -> None:
    """deepspark's INFO lines on stderr through rich; library chatter only when it matters
    (``verbose``: DEBUG lines and MLflow's download bars too)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if verbose:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "true"
    from rich.console import Console
    from rich.logging import RichHandler

    # Not a terminal (a log file, CI): long lines instead of rich's 80-column wrapping.
    handler = RichHandler(
        console=Console(stderr=True, width=None if sys.stderr.isatty() else 160),
        show_path=False,
        show_time=False,
        markup=False,
        rich_tracebacks=False,
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.getLogger("deepspark").setLevel(level)
    for noisy in ("mlflow", "alembic", "py4j"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # JAX warns on every fork; deepspark's child processes (Spark's JVM, workers) exec at once.
    warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While a command runs, anything libraries print goes to stderr, keeping stdout for the
    result (``--json`` promises exactly one object there)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


def emit_json(document: dict[str, Any], stream) -> None:
    """Exactly one JSON object on ``stream`` (NaN / inf become null)."""
    stream.write(json.dumps(_json_ready(document), default=str) + "\n")
    stream.flush()


def format_metric(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"


def echo_train_result(result) -> None:
    """The lines ``train`` and ``sync`` print for a finished run (a ``TrainResult``)."""
    import click

    click.echo(f"run id:     {result.run_id}")
    click.echo(f"model uri:  {result.model_uri}")
    click.echo(f"epochs:     {result.epochs_completed} (best {result.best_epoch})")
    for name, value in result.metrics.items():
        click.echo(f"{name:<18}{format_metric(value)}")
