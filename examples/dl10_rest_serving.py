"""DL 10 - Model serving: register the model, serve it over REST, send it a request.

The course registers a model in the MLflow Model Registry and serves it as a REST endpoint.
deepspark registers with an alias (``champion``; MLflow's aliases replace the deprecated stages)
and ``deepspark serve`` speaks MLflow's scoring protocol on ``/invocations`` (so MLflow clients
and ``curl`` work unchanged), answering ``/ping`` once the model is loaded and compiled.
``mlflow models serve -m models:/california@champion --env-manager local`` serves it too.

Command line equivalent::

    deepspark train --data houses.csv --target median_house_value \
        --register california --alias champion --json
    deepspark serve --model models:/california@champion --port 5000 &
    curl -H 'Content-Type: application/json' http://127.0.0.1:5000/invocations \
        -d '{"dataframe_records": [{"longitude": -122.2, "latitude": 37.8, ...}]}'

Run: ``python examples/dl10_rest_serving.py [--tiny] [--data PATH]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, timeout_s: float = 300) -> float:
    """Poll ``/ping`` until the server answers 200; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if server.poll() is not None:
            raise RuntimeError(f"deepspark serve exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the server did not answer /ping within {timeout_s} s")


def post_json(url: str, document: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 10: registry alias and REST serving.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, 2 epochs")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    parser.add_argument("--name", default="dl10-california", help="registered model name")
    args = parser.parse_args(argv)

    import mlflow
    import pandas as pd

    import deepspark

    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(300, random_state=0)
    result = deepspark.train(
        frame,
        TARGET,
        model="mlp",
        hidden=(32, 16),
        epochs=2 if args.tiny else 50,
        register=args.name,
        aliases=["champion"],
        run_name="dl10-served",
    )
    model_uri = f"models:/{args.name}@champion"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "deepspark",
        "serve",
        "--model",
        model_uri,
        "--port",
        str(port),
        "--tracking-uri",
        mlflow.get_tracking_uri(),
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready_s = wait_until_ready(url, server)
        # Raw rows in, as JSON (NaN is not JSON: missing values are simply left out).
        records = [
            {key: value for key, value in row.items() if pd.notna(value)}
            for row in frame.drop(columns=[TARGET]).head(3).to_dict("records")
        ]
        answer = post_json(f"{url}/invocations", {"dataframe_records": records})
        with urllib.request.urlopen(f"{url}/metadata", timeout=30) as response:
            metadata = json.loads(response.read())
    finally:
        server.terminate()
        server.wait(timeout=60)

    predictions = answer["predictions"]
    local = deepspark.load_model(model_uri).predict(frame.drop(columns=[TARGET]).head(3))
    figures = {
        "lab": "DL10",
        "run_id": result.run_id,
        "registered": result.registered,
        "model_uri": model_uri,
        "url": f"{url}/invocations",
        "seconds_to_ready": ready_s,
        "predictions": predictions,
        "local_predictions": [float(value) for value in local["prediction"]],
        "metadata_keys": sorted(metadata),
    }
    print(json.dumps(figures, default=str))
    return figures


if __name__ == "__main__":
    main()
