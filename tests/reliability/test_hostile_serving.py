"""Hostile payloads against ``deepspark serve`` (Hypothesis), on real HTTP to in-process
servers: hostile tables as JSON (three MLflow formats) and CSV, arbitrary JSON and bytes, and
hostile images as base64 JSON and multipart uploads.

Every answer is a 200 with one prediction per row, or a 4xx whose body is one JSON line naming
the problem; never a 500. The server keeps serving, and its memory stays bounded over hundreds
of hostile requests.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.hostile import (
    FAST_SETTINGS,
    NUMERIC_COLUMNS,
    any_images,
    good_images,
    image_model,
    is_number,
    one_line,
    png_bomb,
    scoring_tables,
    table_model,
)
from tests.serving.conftest import ThreadServer, free_port

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
#: A body from a confused or hostile client: MLflow's fields around any JSON, or raw bytes.
hostile_bodies = st.one_of(
    st.builds(
        lambda field, value: json.dumps({field: value}).encode(),
        st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "x"]),
        json_values,
    ),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=64),
)


def _serve(model_dir: str) -> ThreadServer:
    from deepspark.serving import ServeSettings

    options = ServeSettings(
        model_uri=model_dir, port=free_port(), max_batch_rows=16, max_request_bytes=2 * 10**6
    )
    return ThreadServer(options).start()


@pytest.fixture(scope="module")
def servers():
    running = {"table": _serve(table_model()[0]), "image": _serve(image_model()[0])}
    yield running
    for server in running.values():
        server.stop()


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


def _post(http, server, body: bytes, content_type: str) -> requests.Response:
    headers = {"Content-Type": content_type}
    return http.post(f"{server.url}/invocations", data=body, headers=headers, timeout=60)


def _check(response: requests.Response, rows: int | None = None) -> dict:
    """A 200 with ``rows`` predictions, or a 4xx with one JSON line; never a 5xx."""
    assert response.status_code < 500, response.text
    document = response.json()
    if response.status_code == 200:
        if rows is not None:
            assert len(document["predictions"]) == rows
    else:
        assert 400 <= response.status_code < 500
        assert set(document) == {"error_code", "message"} and one_line(document["message"])
    return document


def _table_bodies(frame) -> dict[str, tuple[bytes, str]]:
    rows = [list(row) for row in frame.itertuples(index=False)]
    records = [dict(zip(frame.columns, row, strict=True)) for row in rows]
    split = {"columns": list(frame.columns), "data": rows}
    return {
        "records": (json.dumps({"dataframe_records": records}).encode(), "application/json"),
        "split": (json.dumps({"dataframe_split": split}).encode(), "application/json"),
        "inputs": (json.dumps({"inputs": records}).encode(), "application/json"),
        "csv": (frame.to_csv(index=False).encode(), "text/csv"),
    }


@settings(FAST_SETTINGS, max_examples=60)
@given(scoring_tables())
def test_hostile_tables_get_predictions_or_one_line(servers, http, frame):
    bad = any(not is_number(value) for name in NUMERIC_COLUMNS for value in frame[name])
    for form, (body, content_type) in _table_bodies(frame).items():
        response = _post(http, servers["table"], body, content_type)
        _check(response, rows=len(frame))
        if form != "csv":  # CSV text is re-read by pandas: its parse is its own
            assert (response.status_code == 400) == bad, (form, response.text)


@settings(FAST_SETTINGS, max_examples=120)
@given(hostile_bodies, st.sampled_from(["application/json", "text/csv", "text/plain"]))
def test_arbitrary_bodies_get_one_line(servers, http, body, content_type):
    _check(_post(http, servers["table"], body, content_type))


@settings(FAST_SETTINGS, max_examples=40)
@given(st.lists(any_images, min_size=1, max_size=4), st.booleans())
def test_hostile_images_get_predictions_or_one_line(servers, http, images, multipart):
    server = servers["image"]
    if multipart:
        files = [("file", (f"{index}.jpg", data)) for index, data in enumerate(images)]
        response = http.post(f"{server.url}/invocations", files=files, timeout=60)
    else:
        encoded = [[base64.b64encode(data).decode()] for data in images]
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": encoded}})
        response = _post(http, server, body.encode(), "application/json")
    document = _check(response, rows=len(images))
    if response.status_code != 200:
        assert "could not be scored" in document["message"], document


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_server_keeps_serving_with_bounded_memory(servers, http):
    """Hundreds of hostile requests (bombs, junk, text in numbers, oversized bodies) later,
    the servers answer good requests and the process has grown less than 50 MB."""
    bomb = base64.b64encode(png_bomb(12_000, 12_000)).decode()
    image_body = json.dumps({"inputs": {"image": [bomb, "bm90IGFuIGltYWdl"]}}).encode()
    table_body = json.dumps({"inputs": {"x1": ["abc", 1], "x2": [1e308, None], "color": [1, 2]}})
    nested = b'{"dataframe_split": {"columns": ["x1"], "data": [' + b"[[1]]," * 5000 + b"[[1]]]}}"
    attacks = [
        (servers["image"], image_body, "application/json"),
        (servers["table"], table_body.encode(), "application/json"),
        (servers["table"], nested, "application/json"),
        (servers["table"], b"x1,x2\n" + b"\xff\xfe" * 100, "text/csv"),
        (servers["table"], b"0" * (3 * 10**6), "application/json"),  # over the 2 MB limit
    ]

    def attack(times: int) -> None:
        for _ in range(times):
            for server, body, content_type in attacks:
                started = time.perf_counter()
                response = _post(http, server, body, content_type)
                _check(response)
                assert response.status_code != 200 and time.perf_counter() - started < 20

    attack(10)  # warm-up: first-use allocations and caches
    before = _rss_bytes()
    attack(60)
    grown = _rss_bytes() - before
    assert grown < 50 * 2**20, f"RSS grew {grown / 2**20:.1f} MB"
    for server in servers.values():
        assert http.get(f"{server.url}/ping", timeout=10).status_code == 200
    good = json.dumps({"inputs": {"x1": [0.5], "x2": [1.0], "color": ["red"]}}).encode()
    assert _post(http, servers["table"], good, "application/json").status_code == 200


@settings(FAST_SETTINGS, max_examples=5)
@given(good_images())
def test_good_images_still_score_after_attacks(servers, http, data):
    body = json.dumps({"inputs": {"image": [base64.b64encode(data).decode()]}}).encode()
    response = _post(http, servers["image"], body, "application/json")
    assert response.status_code == 200, response.text
