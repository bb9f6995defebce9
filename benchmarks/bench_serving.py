"""``deepspark serve`` against ``mlflow models serve`` on the same California housing model.

A tabular_net regression model is trained on ``../shared/data/california_housing.csv`` (a few
epochs: the serving cost does not depend on its accuracy) into a temporary MLflow store, then
served twice, one process each, one worker each:

- ``python -m deepspark serve --model URI`` (adaptive batching);
- ``mlflow models serve -m URI --env-manager local -w 1`` (MLflow's scoring server; the venv's
  bin is put first on ``PATH``, as it needs to find ``uvicorn``).

An asyncio load generator (aiohttp, one client session, ``concurrency`` tasks each sending its
next request when the previous one is answered) posts ``dataframe_split`` JSON bodies of 1 or
100 real rows for ``--seconds`` per case, after a short warm-up, to each server in turn at
concurrency 1, 8 and 32. Per case: ``rows_per_s`` (rows answered with 200 per second),
``requests_per_s``, ``p50_ms`` and ``p99_ms`` (request latency), ``errors`` (non-200 answers and
failed connections). The load generator shares the machine's cores with the server it measures,
the same way for both servers.

Ratios at concurrency 32 (goals, 1-row requests: ``throughput_ratio`` >= 5 and ``p99_ratio`` <=
0.3): deepspark / MLflow throughput and p99 latency, for 1-row and 100-row requests.
Soak (``--soak-seconds 600``): the peak 1-row rate of ``deepspark serve`` is measured (closed
loop at the highest concurrency), then requests are sent open-loop at 80 % of it for the soak
time; reported: errors (goal 0), the rate reached, p50/p99, and the server's resident memory
(RSS, its process tree) after the warm-up (the first 10 %, at least 5 s) and at the end (goal:
growth <= 5 %).

Images (``--images``): a MobileNetV2 alpha=0.35 (``../shared/data/images/weights``, no top,
frozen) with a small head, trained one epoch at 96x96 on the ants-vs-bees photos, served with
1 image per request (base64 JSON) at the highest concurrency, against the same model's direct
in-process ``predict`` on batches of 32: ``images_per_s`` of both and their ratio (goal >= 0.7).

Usage: ``python benchmarks/bench_serving.py [--seconds 5] [--concurrency 1,8,32] [--rows 1,100]
[--soak-seconds 600] [--images] [--no-compare]`` (prints one JSON object on stdout; the default
comparison takes about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CALIFORNIA = REPO.parent / "shared" / "data" / "california_housing.csv"
TARGET = "median_house_value"
IMAGES = REPO.parent / "shared" / "data" / "images"
MOBILENET = IMAGES / "weights" / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"
PHOTOS = IMAGES / "hymenoptera"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_model(folder: Path, epochs: int) -> tuple[str, str]:
    """Train the California model; returns ``(model_uri, tracking_uri)``."""
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    command = [
        sys.executable, "-m", "deepspark", "-q", "train", "--data", str(CALIFORNIA),
        "--target", TARGET, "--epochs", str(epochs), "--tracking-uri", tracking_uri, "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder, check=True)
    return json.loads(done.stdout)["model_uri"], tracking_uri


def start_server(kind: str, model_uri: str, tracking_uri: str, folder: Path, *extra: str):
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if kind == "deepspark":
        command = [sys.executable, "-m", "deepspark", "serve", "--model", model_uri]
        command += ["--port", str(port), "--max-queue", "1024", *extra]
    else:
        command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri]
        command += ["--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"]
    log = open(folder / f"{kind}.log", "w")  # noqa: SIM115  closed with the process
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(process, url, folder / f"{kind}.log")
    return process, url


def _wait_ready(process, url: str, log: Path, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready in {timeout} s: {log.read_text()[-2000:]}")


def stop_server(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def load(url: str, body: bytes, *, rows: int, concurrency: int, seconds: float) -> dict:
    """Closed-loop load: ``concurrency`` clients for ``seconds`` (after 1 s of warm-up)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                started = time.perf_counter()
                try:
                    async with session.post(f"{url}/invocations", data=body, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                if record:
                    if ok:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1

        warm_until = time.perf_counter() + 1.0
        await asyncio.gather(*(client(warm_until, False) for _ in range(concurrency)))
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(client(until, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    answered = np.asarray(latencies) * 1000.0
    return {
        "rows_per_s": round(len(answered) * rows / elapsed, 1),
        "requests_per_s": round(len(answered) / elapsed, 1),
        "p50_ms": round(float(np.percentile(answered, 50)), 2) if len(answered) else None,
        "p99_ms": round(float(np.percentile(answered, 99)), 2) if len(answered) else None,
        "errors": errors,
    }


def _bodies(row_counts: list[int]) -> dict[int, bytes]:
    import pandas as pd

    table = pd.read_csv(CALIFORNIA).drop(columns=[TARGET])
    bodies = {}
    for rows in row_counts:
        sample = table.sample(rows, random_state=rows)
        split = json.loads(sample.to_json(orient="split", index=False))
        bodies[rows] = json.dumps({"dataframe_split": split}).encode()
    return bodies


def _ratios(results: dict, concurrency: int, row_counts: list[int]) -> dict:
    ratios = {}
    for rows in row_counts:
        key = f"c{concurrency}_rows{rows}"
        ours = results.get("deepspark", {}).get(key)
        theirs = results.get("mlflow", {}).get(key)
        if not ours or not theirs or not theirs["rows_per_s"] or not theirs["p99_ms"]:
            continue
        ratios[f"rows{rows}"] = {
            "throughput_ratio": round(ours["rows_per_s"] / theirs["rows_per_s"], 2),
            "p99_ratio": round(ours["p99_ms"] / theirs["p99_ms"], 3),
        }
    return ratios


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (``--workers``), in MB."""
    import psutil

    parent = psutil.Process(pid)
    processes = [parent, *parent.children(recursive=True)]
    return sum(process.memory_info().rss for process in processes) / 1e6


async def soak(url: str, body: bytes, *, rate: float, seconds: float, pid: int) -> dict:
    """Open-loop load at ``rate`` requests/s for ``seconds``; errors, latency and RSS growth
    after the warm-up (the first 10 %, at least 5 s)."""
    import aiohttp

    latencies, errors, rss = [], 0, []
    warm_s = max(5.0, 0.1 * seconds)
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:

        async def one(record: bool) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/invocations", data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            if not ok:
                errors += 1
            elif record:
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        tasks, sent, next_sample = set(), 0, began + warm_s
        while (now := time.perf_counter()) < began + seconds:
            while sent < (now - began) * rate:  # catch up: the schedule, not the answers
                task = asyncio.create_task(one(now - began >= warm_s))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if now >= next_sample:
                rss.append(tree_rss_mb(pid))
                next_sample += 1.0
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    answered = np.asarray(latencies) * 1000.0
    growth = 100.0 * (rss[-1] - rss[0]) / rss[0] if len(rss) > 1 else None
    return {
        "seconds": round(elapsed, 1),
        "target_requests_per_s": round(rate, 1),
        "sent": sent,
        "requests_per_s": round(sent / elapsed, 1),
        "errors": errors,
        "p50_ms": round(float(np.percentile(answered, 50)), 2) if len(answered) else None,
        "p99_ms": round(float(np.percentile(answered, 99)), 2) if len(answered) else None,
        "rss_mb_after_warmup": round(rss[0], 1) if rss else None,
        "rss_mb_end": round(rss[-1], 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "rss_growth_pct": None if growth is None else round(growth, 2),
    }


def run_soak(folder: Path, model_uri: str, tracking_uri: str, body: bytes, options) -> dict:
    level = max(int(level) for level in options.concurrency.split(","))
    process, url = start_server("deepspark", model_uri, tracking_uri, folder)
    try:
        peak = asyncio.run(load(url, body, rows=1, concurrency=level, seconds=options.seconds))
        rate = 0.8 * peak["requests_per_s"]
        result = asyncio.run(soak(url, body, rate=rate, seconds=options.soak_seconds,
                                  pid=process.pid))  # fmt: skip
    finally:
        stop_server(process)
    ok = result["errors"] == 0 and (result["rss_growth_pct"] or 0.0) <= 5.0
    return {f"peak_c{level}": peak, "soak_at_80pct": result,
            "goals": {"errors": "== 0", "rss_growth_pct": "<= 5"}, "goals_met": ok}  # fmt: skip


def train_image_model(folder: Path) -> str:
    """MobileNetV2 alpha=0.35 (shared no-top weights, frozen) and a small head, one epoch."""
    import deepspark

    trained = deepspark.train(
        str(PHOTOS / "train"), base="mobilenet_v2", weights=str(MOBILENET),
        base_options={"alpha": 0.35}, image_size=96, epochs=1, seed=42,
        tracking_uri=f"sqlite:///{folder / 'mlflow-images.db'}",
    )  # fmt: skip
    return trained.model_uri


def run_images(folder: Path, options) -> dict:
    import base64

    import pandas as pd

    import deepspark

    model_uri = train_image_model(folder)
    tracking_uri = f"sqlite:///{folder / 'mlflow-images.db'}"
    photos = sorted((PHOTOS / "val").rglob("*.jpg"))[:32]
    encoded = [path.read_bytes() for path in photos]
    model = deepspark.load_model(model_uri)
    frame = pd.DataFrame({"image": encoded})
    model.predict(frame)  # compile
    started, batches = time.perf_counter(), 0
    while time.perf_counter() - started < options.seconds:
        model.predict(frame)
        batches += 1
    direct = batches * len(encoded) / (time.perf_counter() - started)
    level = max(int(level) for level in options.concurrency.split(","))
    body = json.dumps(
        {"dataframe_records": [{"image": base64.b64encode(encoded[0]).decode()}]}
    ).encode()
    process, url = start_server(
        "deepspark", model_uri, tracking_uri, folder, "--max-batch-rows", "32"
    )
    try:
        served = asyncio.run(load(url, body, rows=1, concurrency=level, seconds=options.seconds))
    finally:
        stop_server(process)
    return {
        "model": "MobileNetV2 alpha=0.35 (imagenet, no top, frozen) + dense head, 96x96",
        "direct_images_per_s_batch32": round(direct, 1),
        f"served_c{level}": served,
        "ratio_served_over_direct": round(served["rows_per_s"] / direct, 3),
        "goal": ">= 0.7",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="Measured seconds per case.")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rows", default="1,100", help="Rows per request.")
    parser.add_argument("--epochs", type=int, default=3, help="Training epochs of the model.")
    parser.add_argument("--soak-seconds", type=float, default=0.0, help="Soak length (0: none).")
    parser.add_argument("--images", action="store_true", help="Also the MobileNetV2 images/s.")
    parser.add_argument("--no-compare", action="store_true", help="Skip the MLflow comparison.")
    parser.add_argument("--json", action="store_true", help="Accepted; the output is JSON.")
    options = parser.parse_args()
    levels = [int(level) for level in options.concurrency.split(",")]
    row_counts = [int(rows) for rows in options.rows.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        folder = Path(scratch)
        model_uri, tracking_uri = train_model(folder, options.epochs)
        bodies = _bodies(row_counts)
        results: dict[str, dict] = {}
        for kind in () if options.no_compare else ("deepspark", "mlflow"):
            process, url = start_server(kind, model_uri, tracking_uri, folder)
            try:
                results[kind] = {
                    f"c{level}_rows{rows}": asyncio.run(
                        load(url, bodies[rows], rows=rows, concurrency=level,
                             seconds=options.seconds)
                    )
                    for level in levels
                    for rows in row_counts
                }  # fmt: skip
            finally:
                stop_server(process)
        soaked = None
        if options.soak_seconds > 0:
            body = _bodies([1])[1]
            soaked = run_soak(folder, model_uri, tracking_uri, body, options)
            print(json.dumps({"soak": soaked}), file=sys.stderr)  # kept if a later part fails
        images = run_images(folder, options) if options.images else None
    top = max(levels)
    document = {
        "benchmark": "serving",
        "model": "california tabular_net regression",
        "seconds_per_case": options.seconds,
        "cores": os.cpu_count(),
        "results": results,
        f"ratios_deepspark_over_mlflow_c{top}": _ratios(results, top, row_counts),
        "goals": {"throughput_ratio_rows1": ">= 5", "p99_ratio_rows1": "<= 0.3"},
        "soak": soaked,
        "images": images,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
