"""/invocations speaks MLflow's scoring protocol over real HTTP: every format gives the
predictions of ``load_model(uri).predict``; bad payloads get one-line 400s naming the field."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import requests

from tests.conftest import make_table

COLUMNS = ["x1", "x2", "count", "color"]


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_table(rows=7, seed=5, task="binary")[COLUMNS]


@pytest.fixture(scope="module")
def expected(tabular_dir, rows) -> pd.DataFrame:
    import deepspark

    return deepspark.load_model(str(tabular_dir)).predict(rows)


@pytest.fixture
def server(start_server):
    return start_server()


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _assert_same(response: requests.Response, expected: pd.DataFrame) -> None:
    assert response.status_code == 200, response.text
    predictions = pd.DataFrame(response.json()["predictions"])
    assert list(predictions.columns) == list(expected.columns)
    assert predictions["prediction"].tolist() == expected["prediction"].tolist()
    probabilities = [name for name in expected.columns if name.startswith("probability_")]
    assert len(probabilities) == 2
    np.testing.assert_allclose(predictions[probabilities], expected[probabilities], rtol=1e-6)


def test_every_json_format_and_csv_give_the_models_predictions(server, rows, expected):
    url = f"{server.url}/invocations"
    split = json.loads(rows.to_json(orient="split", index=False))
    records = _records(rows)
    columnar = {name: [record[name] for record in records] for name in COLUMNS}
    bodies = [
        {"dataframe_split": split},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": records},
        {"inputs": columnar},
        {"instances": [[record[name] for name in COLUMNS] for record in records], "params": {}},
    ]
    for body in bodies:
        _assert_same(requests.post(url, json=body, timeout=30), expected)
    csv = rows.to_csv(index=False)
    response = requests.post(url, data=csv, headers={"Content-Type": "text/csv"}, timeout=30)
    _assert_same(response, expected)


def test_extra_columns_are_ignored_and_an_empty_table_gives_no_predictions(server, rows, expected):
    url = f"{server.url}/invocations"
    body = {"dataframe_records": _records(rows.assign(comment="ignored"))}
    _assert_same(requests.post(url, json=body, timeout=30), expected)
    empty = requests.post(url, json={"dataframe_records": []}, timeout=30)
    assert empty.status_code == 200 and empty.json() == {"predictions": []}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "named"),
    [
        ({"dataframe_records": [{"x1": 1.0, "x2": 2.0, "count": 3.0}]}, None, 400, "color"),
        ({"dataframe_records": [{**dict.fromkeys(COLUMNS, 1.0), "x2": "abc"}]}, None, 400, "x2"),
        ({"records": []}, None, 400, "dataframe_split"),
        ({"dataframe_split": [[1, 2]]}, None, 400, "dataframe_split"),
        (b"{not json", "application/json", 400, "JSON"),
        (b"x1,x2\n1,2\n", "text/csv", 400, "color"),
        (b"x1,x2,count,color\n1,oops,3,red\n", "text/csv", 400, "x2"),
        (b"hello", "text/plain", 415, "text/plain"),
    ],
)
def test_bad_payloads_get_one_line_naming_the_field(server, body, content_type, status, named):
    url = f"{server.url}/invocations"
    if content_type is None:
        response = requests.post(url, json=body, timeout=30)
    else:
        response = requests.post(url, data=body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    document = response.json()
    assert set(document) == {"error_code", "message"}
    assert named in document["message"] and "\n" not in document["message"]
    assert "Traceback" not in response.text
    if status == 400:
        assert document["error_code"] == "BAD_REQUEST"


def test_a_body_over_the_limit_gets_413(start_server, rows):
    server = start_server(max_request_bytes=2000)
    body = {"dataframe_records": _records(pd.concat([rows] * 20, ignore_index=True))}
    response = requests.post(f"{server.url}/invocations", json=body, timeout=30)
    assert response.status_code == 413
    assert response.json()["error_code"] == "REQUEST_TOO_LARGE"
    assert "--max-request-bytes" in response.json()["message"]

    def chunked():  # no Content-Length: counted while streaming
        yield json.dumps(body).encode()

    streamed = requests.post(
        f"{server.url}/invocations",
        data=chunked(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert streamed.status_code == 413


def test_info_routes_describe_the_model(server, tabular_model):
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/health", timeout=5).json()["model"] == "ready"
    import deepspark

    assert requests.get(f"{server.url}/version", timeout=5).text == deepspark.__version__
    metadata = requests.get(f"{server.url}/metadata", timeout=5).json()
    assert metadata["task"] == "binary" and metadata["kind"] == "tabular"
    assert sorted(metadata["classes"]) == ["no", "yes"]
    assert metadata["backend"] in ("jax", "torch")
    assert [column["name"] for column in metadata["signature"]["inputs"]] == COLUMNS
    assert metadata["run_id"]


def test_the_try_page_has_one_typed_field_per_column(server):
    response = requests.get(f"{server.url}/", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for name in COLUMNS[:3]:
        assert f'data-column="{name}" data-numeric="true" type="text"' in page
    assert 'data-column="color" type="text" list="l-color"' in page
    assert '<option value="red">' in page and "fetch('invocations'" in page
