"""Driver memory and throughput of ``deepspark train`` on tables larger than its memory budget.

Generated tables (20 float32 columns, 3 string columns of 10, 25 and 50 levels, a learnable
regression target ``y``), written as folders of Parquet files of up to 1M rows (row groups of
65,536 rows), one folder per ``--rows`` size (default 1M, 8M, 32M; ``make bench``: 1M and 8M).
A table is generated and written one file at a time (``write_table``: this process holds at most
1M rows, about 0.5 GB, whatever the size; about 4 s per million rows and 125 MB of disk per
million rows, removed once its size is measured). Every measurement is one epoch of the real
CLI in a child process::

    python -m deepspark train --data <folder> --target y --epochs 1 --model mlp --json \\
        --tracking-uri sqlite:///<tmp>/mlflow.db --store <tmp>/<run>/store [--max-memory 64]

each run with a store of its own (so every streamed run scans and encodes the table) and JAX's
compilation cache off (so every epoch includes compiling its model, as a first run does), all
runs sharing one MLflow database (the first run creates it). Per run:

- ``driver_peak_rss_mb``: the highest sum of the resident memory of the child and all its
  descendants, polled from ``/proc`` every 0.2 s; ``ru_maxrss_mb``: the kernel's peak for the
  child alone (``os.wait4``; no sampling gap, but not the sum over a tree).
- ``phases``: per phase its seconds and the peak RSS of the tree's samples in it, timed by when
  the child's log lines reach stderr: ``startup_and_prepare`` (imports, reading the table or
  streaming it into shards: up to the ``rows:`` line; a streamed run at default settings splits
  it at the defaults line into ``startup_and_scan``, the first pass, and ``encode``, the
  second), ``build`` (MLflow run set-up, model, compile: up to the epoch's start), ``epoch``
  (the ``epoch 1/1 ... (N s)`` line: one epoch, JIT compilation and validation included),
  ``finish`` (evaluation of validation and test, logging the model, exit).
- ``train_rows_per_s``: training rows / epoch seconds; ``batch_size`` and ``learning_rate``:
  what deepspark chose (``training.prepare.large_table_defaults``' log line; ``None`` when it
  kept the optimizer's default rate).

Runs: per size, streamed at default settings (``--max-memory 64``); at the smallest size also
in memory and streamed with ``--batch-size 2048`` each, and the loader alone (a ``ShardStream``
over that streamed run's training shards, batches of 2048, no model: rows/s of one epoch).
``seconds_per_size`` (and each size's ``seconds``): writing its table, its runs and removing
them, so a 32M-row figure can be planned (``--rows 1000000,32000000`` measures the 32M ratio
without the 8M run).

Goals: ``rss_ratio_largest_vs_1m`` (the largest size's ``driver_peak_rss_mb`` over the smallest
size's, 1M by default) <= 1.15 (memory flat in the table size);
``streamed_vs_in_memory`` (training rows/s, same batch size) >= 0.8; an epoch of 10M rows at
default settings (10M / the largest size's training rows/s) <= 300 s on 2 cores.
Usage: ``python benchmarks/bench_scale.py --json --rows 1000000,4000000``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# Closing figures shared with the other benchmarks (this folder is on sys.path when run as a
# script).
from bench_fit_overhead import closing_figures

NUMERIC_COLUMNS = 20
CATEGORY_LEVELS = (10, 25, 50)
FILE_ROWS = 1_000_000
ROW_GROUP_ROWS = 65_536
STREAM_MEMORY_MB = 64
COMPARE_BATCH_SIZE = 2048
POLL_SECONDS = 0.2
GOAL_RSS_RATIO = 1.15
GOAL_STREAMED_RATIO = 0.8
GOAL_10M_EPOCH_SECONDS = 300.0
ESTIMATE_ROWS = 10_000_000
DEFAULTS_LINE = re.compile(r"(\d+) rows: batch size (\d+), learning rate ([0-9.e+-]+)")
EPOCH_LINE = re.compile(r"epoch 1/1 .*\(([0-9.]+)s\)")
PREPARED_LINE = re.compile(r"task, \d+ features; rows:")
MB = 2**20


def table_chunk(rows: int, seed: int):
    """``rows`` rows as a pyarrow table; the target's coefficients are the same for any seed."""
    import pyarrow as pa

    coefficients = np.random.default_rng(12345)
    weights = coefficients.normal(size=NUMERIC_COLUMNS)
    effects = [coefficients.normal(size=levels) for levels in CATEGORY_LEVELS]
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, NUMERIC_COLUMNS)).astype(np.float32)
    target = numeric @ weights + 0.5 * np.sin(2 * numeric[:, 0]) * numeric[:, 1]
    columns = {f"x{i}": numeric[:, i] for i in range(NUMERIC_COLUMNS)}
    for index, levels in enumerate(CATEGORY_LEVELS):
        codes = rng.integers(0, levels, size=rows)
        target += effects[index][codes]
        names = np.array([f"c{index}_level{level}" for level in range(levels)], dtype=object)
        columns[f"c{index}"] = pa.array(names[codes], type=pa.string())
    columns["y"] = (target + rng.normal(scale=0.1, size=rows)).astype(np.float64)
    return pa.table(columns)


def write_table(location: str | Path, rows: int) -> dict:
    """``rows`` rows as Parquet files of up to ``FILE_ROWS`` rows in the folder ``location`` (a
    local path or a URI pyarrow reaches, such as ``s3://bucket/table``), one file generated and
    written at a time: at most ``FILE_ROWS`` rows are held in memory, whatever ``rows`` is."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    started = time.perf_counter()
    filesystem, root = pafs.FileSystem.from_uri(str(location))
    filesystem.create_dir(root)
    for index, start in enumerate(range(0, rows, FILE_ROWS)):
        table = table_chunk(min(FILE_ROWS, rows - start), seed=index)
        pq.write_table(
            table,
            f"{root}/part-{index:05d}.parquet",
            filesystem=filesystem,
            row_group_size=ROW_GROUP_ROWS,
        )
        del table
    files = filesystem.get_file_info(pafs.FileSelector(root))
    return {
        "files": len(files),
        "files_mb": round(sum(info.size for info in files) / MB, 1),
        "write_seconds": round(time.perf_counter() - started, 1),
    }


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (one pass over ``/proc``)."""
    parents, resident = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone since the listing
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])  # after "pid (comm) state": ppid
        resident[pid] = int(fields[21]) * page  # rss in pages
    tree, frontier = {root}, [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, parent in parents.items() if parent == current]
        tree.update(children)
        frontier.extend(children)
    return sum(resident.get(pid, 0) for pid in tree)


def poll_rss(pid: int, started: float, done: threading.Event, samples: list) -> None:
    """Append ``(seconds since started, tree RSS bytes)`` every ``POLL_SECONDS`` until done."""
    while not done.is_set():
        samples.append((time.perf_counter() - started, tree_rss_bytes(pid)))
        done.wait(POLL_SECONDS)


def timed_lines(stream, started: float, into: list) -> None:
    for line in stream:
        into.append((time.perf_counter() - started, line.rstrip("\n")))


def run_cli(
    argv: list[str], *, timeout: float, extra_env: dict | None = None, cwd: Path | None = None
) -> dict:
    """One ``deepspark train`` child: its JSON result, timed stderr lines and peak memory.

    ``extra_env`` is applied last (a cluster's master URL and S3 settings); ``cwd`` is the
    child's working folder (default: this process's)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEEPSPARK_")}
    # Every run compiles its model: a warm on-disk JAX cache would favour the runs after the
    # first (and depend on what ran on this machine before).
    env["DEEPSPARK_JAX_CACHE"] = "off"
    env.update(extra_env or {})
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "deepspark", "train", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    done, samples, stdout, stderr = threading.Event(), [], [], []
    threads = [
        threading.Thread(target=poll_rss, args=(child.pid, started, done, samples), daemon=True),
        threading.Thread(target=timed_lines, args=(child.stdout, started, stdout), daemon=True),
        threading.Thread(target=timed_lines, args=(child.stderr, started, stderr), daemon=True),
    ]
    for thread in threads:
        thread.start()
    killer = threading.Timer(timeout, os.killpg, args=(child.pid, 9))
    killer.start()
    _, status, usage = os.wait4(child.pid, 0)
    killer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    done.set()
    for thread in threads:
        thread.join()
    text = "\n".join(line for _, line in stdout).strip()
    return {
        "returncode": child.returncode,
        "result": json.loads(text) if child.returncode == 0 and text else None,
        "stderr": stderr,
        "wall": wall,
        "rss_samples": samples,
        "driver_peak_rss_mb": round(max((rss for _, rss in samples), default=0) / MB),
        "ru_maxrss_mb": round(usage.ru_maxrss / 1024),  # KiB on Linux
    }


def first_match(lines: list, pattern: re.Pattern):
    """``(seconds, match)`` of the first stderr line matching ``pattern``, or ``None``."""
    return next(((at, match) for at, line in lines if (match := pattern.search(line))), None)


def phase_ends(run: dict) -> dict[str, float] | None:
    """Each phase's end, in seconds from the child's start, from its log lines: the defaults
    line (streamed: the scan's end), the ``rows:`` line (data prepared), the epoch line (its
    end; its start = end - its seconds), the exit."""
    lines = run["stderr"]
    prepared = first_match(lines, PREPARED_LINE)
    epoch = first_match(lines, EPOCH_LINE)
    if prepared is None or epoch is None:
        return None
    ends = {}
    defaults = first_match(lines, DEFAULTS_LINE)
    if defaults is not None and "streamed from" in prepared[1].string:
        ends["startup_and_scan"] = defaults[0]
        ends["encode"] = prepared[0]
    else:
        ends["startup_and_prepare"] = prepared[0]
    ends["build"] = epoch[0] - float(epoch[1][1])
    ends["epoch"] = epoch[0]
    ends["finish"] = run["wall"]
    return ends


def phase_figures(ends: dict[str, float], samples: list) -> dict:
    """Seconds and peak tree RSS (MB, from the 0.2 s samples) of each phase."""
    figures, begin = {}, 0.0
    for name, end in ends.items():
        peak = max((rss for at, rss in samples if begin <= at <= end), default=0)
        figures[name] = {"seconds": round(end - begin, 1), "peak_rss_mb": round(peak / MB)}
        begin = end
    return figures


def summarize(run: dict) -> dict:
    """A run's figures: memory, phases, chosen settings, training rows/s (or its error)."""
    figures = {key: run[key] for key in ("driver_peak_rss_mb", "ru_maxrss_mb")}
    figures["wall_seconds"] = round(run["wall"], 1)
    if run["result"] is None:
        tail = "\n".join(line for _, line in run["stderr"][-30:])
        return {**figures, "error": f"exit {run['returncode']}: {tail}"}
    result = run["result"]
    figures["rows"] = result["rows"]
    figures["result_seconds"] = result["seconds"]
    figures["val_rmse"] = result["metrics"].get("val_rmse")
    prepared = first_match(run["stderr"], PREPARED_LINE)
    figures["streamed"] = prepared is not None and "streamed from" in prepared[1].string
    defaults = first_match(run["stderr"], DEFAULTS_LINE)
    figures["batch_size"] = int(defaults[1][2]) if defaults else None
    figures["learning_rate"] = float(defaults[1][3]) if defaults else None
    ends = phase_ends(run)
    if ends is None:
        return {**figures, "phases": None, "train_rows_per_s": None}
    figures["phases"] = phase_figures(ends, run["rss_samples"])
    epoch_seconds = ends["epoch"] - ends["build"]
    figures["train_rows_per_s"] = round(result["rows"]["train"] / epoch_seconds)
    return figures


def train_once(
    folder: Path, scratch: Path, name: str, *, streamed: bool, extra=(), timeout: float
) -> dict:
    """One epoch of the CLI on ``folder`` with a store of its own; its summary."""
    argv = [
        f"--data={folder}",
        "--target=y",
        "--epochs=1",
        "--model=mlp",
        "--json",
        f"--tracking-uri=sqlite:///{scratch}/mlflow.db",
        f"--store={scratch / name / 'store'}",
        f"--run-name={name}",
        *([f"--max-memory={STREAM_MEMORY_MB}"] if streamed else []),
        *extra,
    ]
    figures = summarize(run_cli(argv, timeout=timeout))
    print(f"[bench_scale] {name}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


def loader_rows_per_s(store: Path, *, timeout: float) -> dict:
    """Rows/s of one epoch of a ``ShardStream`` over a streamed run's training shards, batches
    of ``COMPARE_BATCH_SIZE`` rows, no model (in a child: keras stays out of this process)."""
    files = sorted(str(path) for path in store.glob("shards/*/train-*.parquet"))
    if not files:
        return {"error": f"no training shards under {store}"}
    code = (
        "import json, sys, time\n"
        "from deepspark.store.stream import ShardStream\n"
        f"with ShardStream({files!r}, batch_size={COMPARE_BATCH_SIZE}) as stream:\n"
        "    started = time.perf_counter()\n"
        "    for index in range(len(stream)):\n"
        "        stream[index]\n"
        "    print(json.dumps([stream.rows, time.perf_counter() - started]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    rows, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}


def compare_at(folder: Path, scratch: Path, timeout: float) -> dict:
    """In memory vs streamed at ``COMPARE_BATCH_SIZE``, and the loader alone, on one table."""
    extra = [f"--batch-size={COMPARE_BATCH_SIZE}"]
    in_memory = train_once(folder, scratch, "in-memory", streamed=False, extra=extra,
                           timeout=timeout)  # fmt: skip
    streamed = train_once(folder, scratch, "streamed", streamed=True, extra=extra,
                          timeout=timeout)  # fmt: skip
    loader = loader_rows_per_s(scratch / "streamed" / "store", timeout=timeout)
    memory_rate, streamed_rate = in_memory.get("train_rows_per_s"), streamed.get("train_rows_per_s")
    ratio = round(streamed_rate / memory_rate, 3) if memory_rate and streamed_rate else None
    loader_rate = loader.get("rows_per_s")
    return {
        "batch_size": COMPARE_BATCH_SIZE,
        "in_memory": in_memory,
        "streamed": streamed,
        "streamed_vs_in_memory": ratio,
        "loader": loader,
        "loader_vs_streamed_training": (
            round(loader_rate / streamed_rate, 2) if loader_rate and streamed_rate else None
        ),
    }


def measure_sizes(sizes: list[int], scratch: Path, timeout: float) -> tuple[dict, dict]:
    """(per size: its table, the streamed run at default settings and the seconds the size took
    in all; the comparison at the smallest size). Each table is removed once measured (disk)."""
    per_size, comparison = {}, {}
    for size in sizes:
        started = time.perf_counter()
        folder = scratch / f"table-{size}"
        table = write_table(folder, size)
        print(f"[bench_scale] {size} rows: {json.dumps(table)}", file=sys.stderr, flush=True)
        if size == sizes[0]:
            comparison = compare_at(folder, scratch, timeout)
        name = f"streamed-default-{size}"
        per_size[str(size)] = {
            "table": table,
            "streamed_default": train_once(folder, scratch, name, streamed=True, timeout=timeout),
        }
        shutil.rmtree(folder)
        for store in scratch.glob("*/store"):
            shutil.rmtree(store)
        per_size[str(size)]["seconds"] = round(time.perf_counter() - started)
    return per_size, comparison


def scale_figures(per_size: dict, comparison: dict) -> tuple[dict, dict]:
    """(the headline figures, the goal checks)."""
    runs = {size: entry["streamed_default"] for size, entry in per_size.items()}
    rss = {size: run["driver_peak_rss_mb"] for size, run in runs.items()}
    smallest, largest = next(iter(runs)), list(runs)[-1]
    rss_ratio = round(rss[largest] / rss[smallest], 3) if rss[smallest] else None
    largest_rate = runs[largest].get("train_rows_per_s")
    estimate = round(ESTIMATE_ROWS / largest_rate) if largest_rate else None
    figures = {
        "driver_peak_rss_mb": rss,
        "ru_maxrss_mb": {size: run["ru_maxrss_mb"] for size, run in runs.items()},
        "rss_reference_rows": int(smallest),
        "rss_ratio_largest_vs_1m": rss_ratio,
        "defaults": {
            size: {"batch_size": run.get("batch_size"), "learning_rate": run.get("learning_rate")}
            for size, run in runs.items()
        },
        "train_rows_per_s_default": {
            size: run.get("train_rows_per_s") for size, run in runs.items()
        },
        "epoch_10m_rows_seconds_estimate": estimate,
        "streamed_vs_in_memory": comparison.get("streamed_vs_in_memory"),
        "seconds_per_size": {size: entry["seconds"] for size, entry in per_size.items()},
    }
    checks = {
        "rss_flat": {"goal_max": GOAL_RSS_RATIO, "value": rss_ratio},
        "streamed_vs_in_memory": {
            "goal_min": GOAL_STREAMED_RATIO,
            "value": comparison.get("streamed_vs_in_memory"),
        },
        "epoch_10m_rows_seconds": {"goal_max": GOAL_10M_EPOCH_SECONDS, "value": estimate},
    }
    for check in checks.values():
        value = check["value"]
        check["pass"] = value is not None and (
            value <= check["goal_max"] if "goal_max" in check else value >= check["goal_min"]
        )
    return figures, checks


def parse_sizes(text: str) -> list[int]:
    """``--rows``: comma-separated positive row counts (``1000000,8000000,32000000``), sorted."""
    try:
        sizes = sorted({int(part) for part in text.split(",")})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1_000:
        raise argparse.ArgumentTypeError(
            "--rows must be comma-separated row counts of at least 1000, such as "
            f"1000000,8000000. Received: --rows={text}"
        )
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=parse_sizes, default="1000000,8000000,32000000")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per CLI run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = args.rows
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        per_size, comparison = measure_sizes(sizes, Path(scratch), args.timeout)
    figures, checks = scale_figures(per_size, comparison)
    result = {
        "benchmark": "scale",
        "keras_backend": os.environ.get("KERAS_BACKEND", "jax"),
        "stream_max_memory_mb": STREAM_MEMORY_MB,
        "rss_measure": "sum over the CLI process tree from /proc every 0.2 s (ru_maxrss_mb: "
        "os.wait4's peak of the CLI process alone)",
        **figures,
        "sizes": per_size,
        "at_smallest": comparison,
        **closing_figures(checks, started, load_at_start),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
