"""Serving fixtures: one tiny trained model per session and real uvicorn servers on free ports."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import FAST, make_table


@pytest.fixture(scope="session")
def tabular_model(tmp_path_factory) -> tuple[str, str]:
    """A binary classifier on the conftest table: ``(model_uri, tracking_uri)``."""
    import mlflow

    import deepspark

    root = tmp_path_factory.mktemp("serving-model")
    data = root / "binary.csv"
    make_table(task="binary").to_csv(data, index=False)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    result = deepspark.train(str(data), "y", tracking_uri=tracking_uri, seed=1, **FAST)
    mlflow.set_tracking_uri(tracking_uri)
    return result.model_uri, tracking_uri


@pytest.fixture(scope="session")
def tabular_dir(tabular_model) -> Path:
    """The served model's local folder (loading it skips the tracking store)."""
    from deepspark.tracking.model import resolve_model_dir

    return resolve_model_dir(tabular_model[0])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThreadServer:
    """``deepspark.serving.create_app`` on a real uvicorn server in a background thread (behind
    the token check when the settings have a token, as ``deepspark serve`` runs it)."""

    def __init__(self, settings, *, load: Callable | None = None):
        import uvicorn

        from deepspark.serving import create_app
        from deepspark.serving.server import protected

        self.app = create_app(settings, load=load)
        self.url = f"http://127.0.0.1:{settings.port}"
        config = uvicorn.Config(
            protected(self.app, settings),
            host="127.0.0.1",
            port=settings.port,
            log_config=None,
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self, *, ready: bool = True, timeout: float = 120) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        if ready:
            self.wait_ready(deadline - time.monotonic())
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while requests.get(f"{self.url}/ping", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, requests.get(f"{self.url}/ping").text
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def model_server(self):
        return self.app.state.server


@pytest.fixture
def start_server(tabular_dir) -> Iterator[Callable[..., ThreadServer]]:
    """``start_server(load=None, ready=True, **settings)`` -> a running ``ThreadServer`` of the
    tabular model (stopped after the test)."""
    from deepspark.serving import ServeSettings

    started: list[ThreadServer] = []

    def start(*, load: Callable | None = None, ready: bool = True, **options) -> ThreadServer:
        options = {"max_batch_rows": 64, **options}
        settings = ServeSettings(model_uri=str(tabular_dir), port=free_port(), **options)
        server = ThreadServer(settings, load=load)
        started.append(server)
        return server.start(ready=ready)

    yield start
    for server in started:
        server.stop()
