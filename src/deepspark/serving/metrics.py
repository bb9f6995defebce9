"""Server metrics in the Prometheus text format (``GET /metrics``), without a client library.

One process's counts: requests by status, request latency and batch sizes as histograms, errors
by code, and the queue length. With ``--workers N`` each worker counts its own requests, as a
scrape of one worker's port sees them.
"""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative-bucket histogram: ``observe(value)``, rendered as ``_bucket``/``_sum``/``_count``.

    Args:
        name: Metric name.
        help_text: The ``# HELP`` line.
        buckets: Upper bounds, increasing (``+Inf`` is added).
    """

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]):
        self.name = name
        self.help_text = help_text
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += count
            label = "+Inf" if bound == float("inf") else _number(bound)
            lines.append(f'{self.name}_bucket{{le="{label}"}} {cumulative}')
        lines.append(f"{self.name}_sum {_number(self.total)}")
        lines.append(f"{self.name}_count {cumulative}")
        return lines


class ServerMetrics:
    """The counters of one server process (safe to update from the batcher thread)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.latency = Histogram(
            "deepspark_request_duration_seconds",
            "Time from receiving a /invocations request to its response.",
            LATENCY_BUCKETS,
        )
        self.batch_rows = Histogram(
            "deepspark_batch_rows", "Rows in each model call of the batcher.", BATCH_BUCKETS
        )
        self.batch_requests = Histogram(
            "deepspark_batch_requests", "Requests coalesced into each model call.", BATCH_BUCKETS
        )
        self.rows_total = 0
        self.queue_length = 0

    def request_done(self, status: int, seconds: float, error_code: str | None = None) -> None:
        with self._lock:
            key = str(status)
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latency.observe(seconds)
            if error_code is not None:
                self.errors[error_code] = self.errors.get(error_code, 0) + 1

    def batch_done(self, rows: int, requests: int) -> None:
        with self._lock:
            self.batch_rows.observe(rows)
            self.batch_requests.observe(requests)
            self.rows_total += rows

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            lines = _counter(
                "deepspark_requests_total", "Requests to /invocations by HTTP status.",
                "status", self.requests,
            )  # fmt: skip
            lines += _counter(
                "deepspark_errors_total", "Failed /invocations requests by error code.",
                "error_code", self.errors,
            )  # fmt: skip
            lines += [
                "# HELP deepspark_predicted_rows_total Rows scored by the model.",
                "# TYPE deepspark_predicted_rows_total counter",
                f"deepspark_predicted_rows_total {self.rows_total}",
                "# HELP deepspark_queue_length Requests waiting for the model.",
                "# TYPE deepspark_queue_length gauge",
                f"deepspark_queue_length {self.queue_length}",
            ]
            for histogram in (self.latency, self.batch_rows, self.batch_requests):
                lines += histogram.lines()
        return "\n".join(lines) + "\n"


def _counter(name: str, help_text: str, label: str, values: dict[str, int]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f'{name}{{{label}="{key}"}} {count}' for key, count in sorted(values.items())]
    return lines


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"
