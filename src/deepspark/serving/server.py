"""Running the app: one uvicorn process, or ``--workers N`` processes from an app factory
(their ``/metrics`` aggregated through a shared folder, ``serving.metrics``)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator

from deepspark.serving.metrics import MULTIPROCESS_VARIABLE
from deepspark.serving.settings import SETTINGS_VARIABLE, ServeSettings

#: Seconds beyond ``timeout_s`` that a shutdown waits for in-flight requests.
_DRAIN_MARGIN_S = 5.0


def serve(settings: ServeSettings) -> None:
    """Serve ``settings.model_uri`` until SIGINT or SIGTERM (in-flight requests are drained).

    The model URI is resolved (and downloaded) and the model loaded once, here, so that a wrong
    URI or a model that cannot be loaded fails before the server starts, and every worker loads
    the same local copy.

    Args:
        settings: Model, address, workers, batching and limits.

    Raises:
        ModelNotFoundError: The URI resolves to no deepspark model.
        UntrustedModelError: The model holds code and the user has not opted in to running it.
    """
    import uvicorn

    from deepspark.tracking.model import load_model, resolve_model_dir

    model_dir = str(resolve_model_dir(settings.model_uri))
    settings = dataclasses.replace(settings, model_dir=model_dir)
    # Loaded before the port opens: a file that cannot be loaded (or may not be: untrusted code)
    # fails the command with its line instead of a server that never gets ready.
    model = load_model(model_dir)
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": settings.timeout_s + _DRAIN_MARGIN_S,
        "timeout_keep_alive": 30,
    }
    if settings.workers == 1:
        from deepspark.serving.app import create_app

        app = protected(create_app(settings, load=lambda: model), settings)
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return
    model = None  # each worker process loads its own copy
    os.environ[SETTINGS_VARIABLE] = settings.to_json()
    with _metrics_folder():
        uvicorn.run(
            "deepspark.serving.server:worker_app",
            factory=True,
            workers=settings.workers,
            **options,
        )


def protected(app, settings: ServeSettings):
    """``app`` behind the token check when ``settings`` has a token."""
    from deepspark.serving.auth import TokenAuth

    return TokenAuth(app, settings.token) if settings.token else app


def worker_app():
    """The app of one ``--workers`` process (settings from ``DEEPSPARK_SERVE_SETTINGS``)."""
    from deepspark.serving.app import create_app

    settings = ServeSettings.from_environment()
    return protected(create_app(settings), settings)


@contextlib.contextmanager
def _metrics_folder() -> Iterator[None]:
    """An empty folder where the workers write their metrics (``/metrics`` answers the sums),
    removed afterwards; a folder the user set in ``PROMETHEUS_MULTIPROC_DIR`` is kept."""
    if os.environ.get(MULTIPROCESS_VARIABLE):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="deepspark-metrics-") as folder:
        os.environ[MULTIPROCESS_VARIABLE] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_VARIABLE]
