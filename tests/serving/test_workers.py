"""``deepspark serve --workers 2``: each process loads the model and answers."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import make_table
from tests.serving.test_serve_cli import COLUMNS, start_process, stop_process


@pytest.mark.slow
def test_workers_processes_each_serve_the_model(tabular_dir):
    process, url = start_process(tabular_dir, "--workers", "2")
    try:
        rows = make_table(rows=4, seed=3)[COLUMNS]
        body = {"dataframe_records": json.loads(rows.to_json(orient="records"))}
        deadline = time.monotonic() + 120
        answered = 0
        while answered < 6:  # a worker still warming up answers 503 + Retry-After
            response = requests.post(f"{url}/invocations", json=body, timeout=30)
            if response.status_code == 503 and time.monotonic() < deadline:
                time.sleep(float(response.headers["Retry-After"]) / 4)
                continue
            assert response.status_code == 200 and len(response.json()["predictions"]) == 4
            answered += 1
        assert requests.get(f"{url}/metadata", timeout=5).json()["task"] == "binary"
    finally:
        stop_process(process)
