"""``deepspark serve --workers 2``: each process loads the model and answers, and ``/metrics``
of either worker counts the requests of both (``prometheus_client``'s multiprocess mode)."""

from __future__ import annotations

import json
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_table
from tests.serving.test_serve_cli import COLUMNS, start_process, stop_process


def _samples(url: str) -> list:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _ready_pids(url: str) -> set[str]:
    return {
        sample.labels["pid"]
        for sample in _samples(url)
        if sample.name == "deepspark_model_ready" and sample.value == 1
    }


@pytest.mark.slow
def test_workers_serve_the_model_and_metrics_sum_over_them(tabular_dir):
    process, url = start_process(tabular_dir, "--workers", "2")
    try:
        deadline = time.monotonic() + 120
        while len(_ready_pids(url)) < 2:  # /ping answered: one worker is ready, maybe not both
            assert time.monotonic() < deadline, _samples(url)
            time.sleep(0.2)
        rows = make_table(rows=4, seed=3)[COLUMNS]
        body = {"dataframe_records": json.loads(rows.to_json(orient="records"))}
        for _ in range(8):  # a new connection each: the kernel spreads them over the workers
            response = requests.post(f"{url}/invocations", json=body, timeout=30)
            assert response.status_code == 200 and len(response.json()["predictions"]) == 4
        assert requests.get(f"{url}/metadata", timeout=5).json()["task"] == "binary"
        for _ in range(6):  # every scrape, whichever worker answers it, sees all requests
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for sample in _samples(url)
            }
            assert samples[("deepspark_requests_total", (("status", "200"),))] == 8
            assert samples[("deepspark_predicted_rows_total", ())] == 32
            assert samples[("deepspark_request_duration_seconds_count", ())] == 8
            ready = [key for key in samples if key[0] == "deepspark_model_ready"]
            assert len(ready) == 2, ready
    finally:
        stop_process(process)
