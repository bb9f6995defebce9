"""``deepspark serve``: parse the options, then run ``deepspark.serving.serve``."""

from __future__ import annotations

import click

EXIT_USAGE = 2


class _BadInput(click.ClickException):
    """Bad input found while starting: one line on stderr, exit code 2 (as ``cli.main`` maps
    ``UserInputError``), also when the command runs on its own."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"deepspark: error: {self.format_message()}", err=True, file=file)


@click.command("serve")
@click.option("--model", "model_uri", required=True, help="Model URI (models:/..., runs:/...).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=5000, show_default=True, help="TCP port.")
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Processes, each with the model."
)
@click.option(
    "--max-batch-rows", type=int, default=1024, show_default=True,
    help="Most rows coalesced into one model call.",
)  # fmt: skip
@click.option(
    "--max-wait-ms", type=float, default=5.0, show_default=True,
    help="Longest a request waits for others to join its batch.",
)  # fmt: skip
@click.option(
    "--max-queue", type=int, default=256, show_default=True,
    help="Most requests waiting for the model; more get 503 with Retry-After.",
)  # fmt: skip
@click.option(
    "--max-request-bytes", default="10MB", show_default=True,
    help="Largest request body (e.g. 512KB, 10MB); larger ones get 413.",
)  # fmt: skip
@click.option(
    "--timeout-s", type=float, default=30.0, show_default=True,
    help="Longest a request waits for its predictions; then 504.",
)  # fmt: skip
@click.option(
    "--allow-paths", "allow_paths", multiple=True, metavar="FOLDER",
    help="Image models: a 'path' column may name files in FOLDER (or under a URI prefix such "
    "as s3://bucket/photos); repeatable. Paths elsewhere, after '..' and links are resolved, "
    "get 400.",
)  # fmt: skip
@click.option(
    "--token", envvar="DEEPSPARK_SERVE_TOKEN", show_envvar=True,
    help="Bearer token every request but /ping and /health must carry (needed on a "
    "non-loopback --host; the environment variable keeps it out of `ps`).",
)  # fmt: skip
@click.option(
    "--no-token", is_flag=True,
    help="Listen on a non-loopback --host without a token (a reverse proxy authenticates).",
)  # fmt: skip
@click.option("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ URIs.")
def serve_command(model_uri, tracking_uri, max_request_bytes, **options) -> None:
    """Serve a model over REST: MLflow's scoring protocol on /invocations (JSON, CSV, image
    uploads), /ping, /health, /version, /metadata and /metrics, with adaptive batching.

    Example: curl -H 'Content-Type: application/json' -d
    '{"dataframe_records": [{"x1": 1.0, "color": "red"}]}' http://127.0.0.1:5000/invocations
    """
    from deepspark.errors import MissingDependencyError, UserInputError
    from deepspark.serving import ServeSettings, parse_size, serve
    from deepspark.tracking.run import use_tracking_uri

    try:
        use_tracking_uri(tracking_uri)
        settings = ServeSettings(
            model_uri=model_uri, max_request_bytes=parse_size(max_request_bytes), **options
        )
        serve(settings)
    except (UserInputError, MissingDependencyError) as error:
        raise _BadInput(" ".join(str(error).split())) from error
