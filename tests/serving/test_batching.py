"""Adaptive batching and limits over real HTTP: concurrent requests share model calls and each
gets its own rows; a full queue answers 503, a slow answer 504; /ping waits for the warm-up."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_table

COLUMNS = ["x1", "x2", "count", "color"]


class SlowModel:
    """The real model, answering ``delay`` seconds late (a busy accelerator, a big network)."""

    def __init__(self, model, delay: float):
        self.model, self.delay = model, delay

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        time.sleep(self.delay)
        return self.model.predict(frame)


def slow_loader(model_dir, delay: float):
    def load():
        import deepspark

        return SlowModel(deepspark.load_model(str(model_dir)), delay)

    return load


def metrics(url: str) -> dict[str, float]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def _wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _post(url: str, frame: pd.DataFrame) -> requests.Response:
    body = {"dataframe_split": {"columns": COLUMNS, "data": frame[COLUMNS].values.tolist()}}
    return requests.post(f"{url}/invocations", json=body, timeout=60)


def test_concurrent_requests_share_model_calls_and_get_their_own_rows(start_server, tabular_dir):
    import deepspark

    server = start_server(load=slow_loader(tabular_dir, 0.3), max_wait_ms=50)
    table = make_table(rows=48, seed=9, task="binary")[COLUMNS].fillna({"x2": 0.0, "color": "red"})
    parts = [table.iloc[start : start + 1 + start % 3] for start in range(0, 48, 3)]
    with ThreadPoolExecutor(len(parts)) as pool:
        responses = list(pool.map(lambda part: _post(server.url, part), parts))
    model = deepspark.load_model(str(tabular_dir))
    for part, response in zip(parts, responses, strict=True):
        assert response.status_code == 200, response.text
        got = pd.DataFrame(response.json()["predictions"])
        expected = model.predict(part.reset_index(drop=True))
        assert got["prediction"].tolist() == expected["prediction"].tolist()
        np.testing.assert_allclose(got["probability_yes"], expected["probability_yes"], rtol=1e-6)
    counted = metrics(server.url)
    batches = counted["deepspark_batch_requests_count"]
    assert counted["deepspark_batch_requests_sum"] == len(parts)
    assert batches < len(parts), counted
    assert counted["deepspark_batch_rows_sum"] == sum(len(part) for part in parts)
    assert counted["deepspark_requests_total{status=200}"] == len(parts)


def test_a_full_queue_answers_503_with_retry_after(start_server, tabular_dir):
    server = start_server(load=slow_loader(tabular_dir, 1.5), max_queue=1)
    rows = make_table(rows=2, seed=1)[COLUMNS]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_post, server.url, rows)
        _wait_for(lambda: metrics(server.url).get("deepspark_batch_rows_count", 0) >= 1)
        second = pool.submit(_post, server.url, rows)
        _wait_for(lambda: metrics(server.url)["deepspark_queue_length"] == 1)
        refused = _post(server.url, rows)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert first.result().status_code == 200 and second.result().status_code == 200
    counted = metrics(server.url)
    assert counted["deepspark_errors_total{error_code=TEMPORARILY_UNAVAILABLE}"] == 1


def test_a_request_waiting_longer_than_the_timeout_gets_504(start_server, tabular_dir):
    server = start_server(load=slow_loader(tabular_dir, 1.0), timeout_s=0.2)
    response = _post(server.url, make_table(rows=1)[COLUMNS])
    assert response.status_code == 504
    assert "timeout_s=0.2" in response.json()["message"]


def test_ping_says_ready_only_after_the_model_is_loaded_and_warmed(start_server, tabular_dir):
    import deepspark

    release = threading.Event()

    def load():
        release.wait(60)
        return deepspark.load_model(str(tabular_dir))

    server = start_server(load=load, ready=False)
    ping = requests.get(f"{server.url}/ping", timeout=5)
    assert ping.status_code == 503 and ping.json()["status"] == "loading"
    assert requests.get(f"{server.url}/health", timeout=5).json() == {
        "status": "ok",
        "model": "loading",
    }
    early = _post(server.url, make_table(rows=1)[COLUMNS])
    assert early.status_code == 503 and early.headers["Retry-After"] == "1"
    release.set()
    server.wait_ready(60)
    assert _post(server.url, make_table(rows=1)[COLUMNS]).status_code == 200


def test_a_model_that_does_not_load_is_reported_not_ready(start_server):
    from deepspark.errors import ModelNotFoundError

    def load():
        raise ModelNotFoundError("Not a deepspark model. Received: model='nowhere'")

    server = start_server(load=load, ready=False)
    _wait_for(lambda: requests.get(f"{server.url}/health", timeout=5).json()["model"] == "failed")
    ping = requests.get(f"{server.url}/ping", timeout=5)
    assert ping.status_code == 503 and "nowhere" in ping.json()["message"]


def test_one_failing_request_does_not_fail_the_others_in_its_batch(tabular_dir):
    import deepspark
    from deepspark.serving.batching import Batcher
    from deepspark.serving.metrics import ServerMetrics
    from deepspark.serving.rows import Rows

    model = deepspark.load_model(str(tabular_dir))

    def score(parts):
        frame = Rows.concat(parts).to_frame()
        if (frame["x1"] == 999).any():
            raise ValueError("x1 = 999 is cursed")
        result, start, answers = model.predict(frame), 0, []
        for part in parts:
            answers.append(result.iloc[start : start + len(part)].reset_index(drop=True))
            start += len(part)
        return answers

    def rows(frame: pd.DataFrame) -> Rows:
        columns = {name: frame[name].to_numpy(dtype=object) for name in COLUMNS}
        columns.update({name: frame[name].to_numpy(dtype=float) for name in COLUMNS[:3]})
        return Rows(columns, len(frame))

    async def scenario():
        batcher = Batcher(
            score, max_batch_rows=64, max_wait_ms=200, max_queue=8, metrics=ServerMetrics()
        )
        batcher.start()
        frames = [make_table(rows=2, seed=seed)[COLUMNS] for seed in range(3)]
        frames[1] = frames[1].assign(x1=999.0)
        with batcher.arriving():  # a request on its way: the batch waits for it
            tasks = [asyncio.create_task(batcher.submit(rows(f), timeout_s=30)) for f in frames]
            await asyncio.sleep(0.05)
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        return frames, answers, batcher.metrics

    frames, answers, counted = asyncio.run(scenario())
    assert isinstance(answers[1], ValueError) and "cursed" in str(answers[1])
    for index in (0, 2):
        expected = model.predict(frames[index])
        assert answers[index]["prediction"].tolist() == expected["prediction"].tolist()
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(counted.render())
        for sample in family.samples
    }
    assert samples[("deepspark_batch_requests_bucket", "1.0")] == 0  # one batch of three
    assert samples[("deepspark_batch_requests_sum", None)] == 3


def test_settings_refuse_nonsense_with_the_option_named():
    from deepspark.errors import UserInputError
    from deepspark.serving import ServeSettings, parse_size

    with pytest.raises(UserInputError, match=r"--max-queue must be a positive number"):
        ServeSettings(model_uri="m", max_queue=0)
    with pytest.raises(UserInputError, match=r"Received: max_request_bytes='ten'"):
        parse_size("ten")
    assert parse_size("10MB") == 10_000_000 and parse_size("1MiB") == 2**20
