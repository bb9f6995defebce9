"""``deepspark serve`` as users run it: bad input exits 2 with one line; a real server process
drains an in-flight request on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from deepspark.cli.serve import serve_command
from tests.conftest import make_table
from tests.serving.conftest import free_port

COLUMNS = ["x1", "x2", "count", "color"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "no/such/model"], "Received: model='no/such/model'"),
        (["--model", "m", "--max-queue", "0"], "--max-queue must be a positive number"),
        (["--model", "m", "--max-request-bytes", "lots"], "max_request_bytes='lots'"),
    ],
)
def test_bad_input_exits_2_with_one_line(workdir, arguments, message):
    result = CliRunner().invoke(serve_command, arguments)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepspark: error: "), result.stderr
    assert message in lines[0]


def test_a_missing_option_is_a_usage_error():
    result = CliRunner().invoke(serve_command, [])
    assert result.exit_code == 2 and "Missing option '--model'" in result.stderr


def start_process(model_dir: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "deepspark", "serve", "--model", str(model_dir)]
    command += ["--port", str(port), "--max-batch-rows", "32", *options]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy()
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the server did not get ready"
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_sigterm_drains_the_request_in_flight(tabular_dir):
    process, url = start_process(tabular_dir)
    try:
        rows = make_table(rows=3, seed=2)[COLUMNS]
        body = json.dumps({"dataframe_records": json.loads(rows.to_json(orient="records"))})
        release, answer = threading.Event(), {}

        def slow_body():  # the request is in flight: half its body sent
            yield body[: len(body) // 2].encode()
            release.wait(30)
            yield body[len(body) // 2 :].encode()

        def send():
            answer["response"] = requests.post(
                f"{url}/invocations",
                data=slow_body(),
                headers={"Content-Type": "application/json"},
                timeout=60,
            )

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None  # still draining
        release.set()
        sender.join(60)
        response = answer["response"]
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 3
        process.wait(timeout=30)
    finally:
        stop_process(process)
