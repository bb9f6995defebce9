"""Server metrics in the Prometheus text format (``GET /metrics``), with ``prometheus_client``.

Requests by status, request latency and batch sizes as histograms, errors by code, rows scored
and the queue length. One process keeps its metrics in a registry of its own (several apps in
one process, as in tests, do not mix). With ``--workers N`` every worker writes its values to
files in one folder (``prometheus_client``'s multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``,
set by ``serve``) and a scrape of any worker answers the sums over all of them (the queue
length: the sum over the live workers; ``deepspark_model_ready``: one sample per live worker,
labelled with its ``pid``), as Gunicorn and uvicorn deployments do.
"""

from __future__ import annotations

import os

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: prometheus_client's folder of per-process value files (multiprocess mode).
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_folder() -> str | None:
    """The multiprocess folder when this process is one of several workers, else ``None``."""
    return os.environ.get(MULTIPROCESS_VARIABLE) or None


class ServerMetrics:
    """The counters of one server process (safe to update from the batcher thread)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.folder = multiprocess_folder()
        self._queue_length = 0
        # Multiprocess values live in files and are collected from there, not from a registry.
        self.registry = None if self.folder else CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "deepspark_requests", "Requests to /invocations by HTTP status.", ["status"],
            registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "deepspark_errors", "Failed /invocations requests by error code.", ["error_code"],
            registry=registry,
        )  # fmt: skip
        self.rows = Counter(
            "deepspark_predicted_rows", "Rows scored by the model.", registry=registry
        )
        self.queue = Gauge(
            "deepspark_queue_length", "Requests waiting for the model.",
            multiprocess_mode="livesum", registry=registry,
        )  # fmt: skip
        # One sample per live worker (labelled by ``pid`` when there are several).
        self.model_ready = Gauge(
            "deepspark_model_ready", "1 once the model is loaded and warmed, else 0.",
            multiprocess_mode="liveall", registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "deepspark_request_duration_seconds",
            "Time from receiving a /invocations request to its response.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "deepspark_batch_rows", "Rows in each model call of the batcher.",
            buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_requests = Histogram(
            "deepspark_batch_requests", "Requests coalesced into each model call.",
            buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip

    @property
    def queue_length(self) -> int:
        return self._queue_length

    @queue_length.setter
    def queue_length(self, length: int) -> None:
        self._queue_length = length
        self.queue.set(length)

    def request_done(self, status: int, seconds: float, error_code: str | None = None) -> None:
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(seconds)
        if error_code is not None:
            self.errors.labels(error_code=error_code).inc()

    def batch_done(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.rows.inc(rows)

    def render(self) -> str:
        """The Prometheus text exposition of every metric (over all workers)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.folder)
        return generate_latest(registry).decode()

    def close(self) -> None:
        """This worker stops: its live gauges leave the sums (its counts stay in them)."""
        if self.folder:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid(), self.folder)
