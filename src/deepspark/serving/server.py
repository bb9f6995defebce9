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

    The model URI is resolved (and downloaded) once, here, so that a wrong URI fails before the
    server starts and every worker loads the same local copy.

    Args:
        settings: Model, address, workers, batching and limits.

    Raises:
        ModelNotFoundError: The URI resolves to no deepspark model.
    """
    import uvicorn

    from deepspark.tracking.model import resolve_model_dir

    model_dir = str(resolve_model_dir(settings.model_uri))
    settings = dataclasses.replace(settings, model_dir=model_dir)
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

        uvicorn.Server(uvicorn.Config(create_app(settings), **options)).run()
        return
    os.environ[SETTINGS_VARIABLE] = settings.to_json()
    with _metrics_folder():
        uvicorn.run(
            "deepspark.serving.app:create_app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,
        )


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
