"""The ASGI app of ``deepspark serve`` (Starlette): MLflow's scoring protocol with adaptive
batching, limits and metrics.

Routes::

    POST /invocations   MLflow scoring protocol (JSON, CSV, multipart image uploads)
    GET  /ping          200 once the model is loaded and warmed (compiled), else 503
    GET  /health        200 while the process runs (liveness), with the model's state
    GET  /version       the deepspark version
    GET  /metadata      signature, task, kind, classes, backend, training run
    GET  /metrics       Prometheus text
    GET  /              a page to try the model (a form generated from the signature)

The model loads in the background after start-up, so ``/health`` answers at once and ``/ping``
says when the server is ready; warming runs one predict per padded batch size up to
``max_batch_rows``, so no request pays for a compilation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from deepspark.errors import UserInputError
from deepspark.serving import protocol
from deepspark.serving.batching import Batcher
from deepspark.serving.metrics import CONTENT_TYPE, ServerMetrics
from deepspark.serving.protocol import RequestError
from deepspark.serving.rows import InputColumn, Rows, conform, input_columns
from deepspark.serving.settings import ServeSettings
from deepspark.serving.warmup import warm_up

logger = logging.getLogger(__name__)

#: Bodies larger than this are parsed in a worker thread, keeping the event loop free.
_PARSE_IN_THREAD_BYTES = 256 * 1024


class ModelServer:
    """The state behind the routes: the model once loaded, its batcher and the metrics.

    Args:
        settings: How to serve.
        load: Returns the ``DeepsparkModel`` (default: ``load_model(settings.model_uri)``).
    """

    def __init__(self, settings: ServeSettings, *, load: Callable[[], Any] | None = None):
        self.settings = settings
        self.load = load or _loader(settings.model_dir or settings.model_uri)
        self.metrics = ServerMetrics()
        self.model = None
        self.columns: tuple[InputColumn, ...] = ()
        self.signature = None
        self.batcher: Batcher | None = None
        self.failure: str | None = None

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.get_running_loop().create_task(self._load())
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            if self.batcher is not None:
                await self.batcher.stop()
            self.metrics.close()

    async def _load(self) -> None:
        from deepspark.tracking.pyfunc import model_signature

        try:
            model = await asyncio.to_thread(self.load)
            signature = model_signature(model)
            columns = input_columns(signature)
            await asyncio.to_thread(warm_up, model, columns, self.settings.max_batch_rows)
        except Exception as error:  # noqa: BLE001  reported by /ping and /health
            self.failure = f"{type(error).__name__}: {' '.join(str(error).split())}"
            logger.error("the model could not be loaded: %s", self.failure)
            return
        self.model, self.signature = model, signature
        self.columns = columns
        batcher = Batcher(
            _scorer(model),
            batch_key=lambda rows: rows.names,
            max_batch_rows=self.settings.max_batch_rows,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue=self.settings.max_queue,
            metrics=self.metrics,
        )
        batcher.start()
        self.batcher = batcher
        self.metrics.model_ready.set(1)
        logger.info("serving %s on http://%s:%s", self.settings.model_uri,
                    self.settings.host, self.settings.port)  # fmt: skip

    async def invocations(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await self._answer(request)
            response = Response(body, media_type="application/json")
            self.metrics.request_done(200, time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001  every error becomes one JSON line
            failure = _request_error(error)
            response = Response(
                failure.body(),
                status_code=failure.status,
                media_type="application/json",
                headers=failure.headers,
            )
            self.metrics.request_done(
                failure.status, time.perf_counter() - started, failure.error_code
            )
        return response

    async def _answer(self, request: Request) -> bytes:
        if self.batcher is None:
            raise RequestError(
                f"The model is not ready yet ({self.failure or 'loading'}); retry when /ping "
                f"answers 200. Received: model={self.settings.model_uri!r}",
                status=503,
                error_code="TEMPORARILY_UNAVAILABLE",
                headers={"Retry-After": "1"},
            )
        with self.batcher.arriving():
            body = await _read_body(request, self.settings.max_request_bytes)
            rows = await self._rows(request, body)
        if not len(rows):
            return protocol.predictions_body({})
        return await self.batcher.submit(rows, timeout_s=self.settings.timeout_s)

    async def _rows(self, request: Request, body: bytes) -> Rows:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        columns, allow_paths = self.columns, self.settings.allow_paths
        if media_type == "multipart/form-data":
            files, fields = await _form(request, body)
            binary = [column.name for column in columns if column.type == "binary"]
            table = protocol.table_from_files(files, fields, (binary or [None])[0])
            return conform(table, columns, allow_paths=allow_paths)
        if media_type == "application/json":
            names = [column.name for column in columns]
            read = lambda: protocol.table_from_json(body, names)  # noqa: E731
        elif media_type == "text/csv":
            text = [column.name for column in columns if column.type == "string"]
            read = lambda: protocol.table_from_csv(body, text)  # noqa: E731
        else:
            raise RequestError(
                "Content type must be application/json, text/csv or multipart/form-data. "
                f"Received: content_type={media_type or None!r}",
                status=415,
                error_code="UNSUPPORTED_MEDIA_TYPE",
            )

        def parse() -> Rows:
            return conform(read(), columns, allow_paths=allow_paths)

        if len(body) > _PARSE_IN_THREAD_BYTES:
            return await asyncio.to_thread(parse)
        return parse()

    async def ping(self, request: Request) -> Response:
        if self.ready:
            return PlainTextResponse("ready\n")
        status = "failed" if self.failure else "loading"
        return JSONResponse({"status": status, "message": self.failure}, status_code=503)

    async def health(self, request: Request) -> Response:
        state = "ready" if self.ready else "failed" if self.failure else "loading"
        return JSONResponse({"status": "ok", "model": state})

    async def version(self, request: Request) -> Response:
        import deepspark

        return PlainTextResponse(deepspark.__version__)

    async def metadata(self, request: Request) -> Response:
        if not self.ready:
            return await self.ping(request)
        return JSONResponse(model_metadata(self.model, self.signature, self.settings.model_uri))

    async def page(self, request: Request) -> Response:
        if not self.ready:
            return await self.ping(request)
        from deepspark.serving.page import try_page

        schema = self.model.schema
        levels = {spec.name: list(spec.vocabulary) for spec in schema.categorical_specs}
        title = f"{schema.task} model of {schema.target}"
        return HTMLResponse(try_page(self.columns, title=title, levels=levels))

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def model_metadata(model, signature, model_uri: str) -> dict[str, Any]:
    """What ``/metadata`` tells about the served model."""
    versions = model.metadata.get("versions", {})
    return {
        "model_uri": model_uri,
        "task": model.task,
        "kind": model.kind,
        "classes": list(model.schema.class_labels),
        "feature_names": model.feature_names,
        "target": model.schema.target,
        "signature": {
            "inputs": json.loads(signature.inputs.to_json()),
            "outputs": json.loads(signature.outputs.to_json()),
        },
        "backend": versions.get("keras_backend"),
        "versions": versions,
        "run_id": model.metadata.get("run_id"),
        "metrics": model.metadata.get("metrics", {}),
    }


def create_app(settings: ServeSettings, *, load: Callable[[], Any] | None = None) -> Starlette:
    """The Starlette app serving ``settings.model_uri``.

    Args:
        settings: How to serve (limits, batching).
        load: Returns the model; default ``deepspark.load_model(settings.model_uri)``.

    Returns:
        An ASGI app; run it with uvicorn (``deepspark serve`` does).
    """
    server = ModelServer(settings, load=load)
    routes = [
        Route("/", server.page, methods=["GET"]),
        Route("/invocations", server.invocations, methods=["POST"]),
        Route("/ping", server.ping, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/version", server.version, methods=["GET"]),
        Route("/metadata", server.metadata, methods=["GET"]),
        Route("/metrics", server.prometheus, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=server.lifespan)
    app.state.server = server
    return app


def create_app_from_environment() -> Starlette:
    """The app of one ``--workers`` process (settings from ``DEEPSPARK_SERVE_SETTINGS``)."""
    return create_app(ServeSettings.from_environment())


def _loader(model_uri: str) -> Callable[[], Any]:
    def load():
        from deepspark.tracking.model import load_model

        return load_model(model_uri)

    return load


def _scorer(model) -> Callable[[Sequence[Rows]], list[Any]]:
    """Score requests with one ``model.predict``: their response bodies (or their 400s)."""

    def score(parts: Sequence[Rows]) -> list[Any]:
        result = model.predict(Rows.concat(parts).to_frame())
        columns = protocol.prediction_columns(result)
        answers, start = [], 0
        for part in parts:
            piece = {name: values[start : start + part.count] for name, values in columns.items()}
            start += part.count
            failure = protocol.row_error(piece, part.names)
            answers.append(failure if failure is not None else protocol.predictions_body(piece))
        return answers

    return score


def _request_error(error: Exception) -> RequestError:
    if isinstance(error, RequestError):
        return error
    if isinstance(error, UserInputError):
        return RequestError(str(error))
    logger.error("request failed", exc_info=error)
    return RequestError(
        f"internal error: {type(error).__name__}: {error}",
        status=500,
        error_code="INTERNAL_ERROR",
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        f"The request body is larger than the server accepts ({limit} bytes, "
        f"--max-request-bytes); split it into smaller requests. Received: bytes={size}",
        status=413,
        error_code="REQUEST_TOO_LARGE",
    )


async def _form(request: Request, body: bytes) -> tuple[list[bytes], dict[str, str]]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, replay()).parse()
    except MultiPartException as error:
        raise RequestError(
            f"The multipart body does not parse ({error}). Received: body=<form>"
        ) from None
    files, fields = [], {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append(await value.read())
        else:
            fields[name] = value
    return files, fields
