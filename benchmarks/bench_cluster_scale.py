"""Driver and per-worker memory of ``deepspark train --workers 2 --launcher spark`` on the
multi-host harness, from an ``s3://`` table to a store on S3, as the table grows.

The harness (``tests/cluster/harness.py``): a Spark standalone master and 2 workers of 1 core
each, whose executors run in their own mount namespace where the driver's working folder is
covered by an empty tmpfs, next to an S3 server (moto's server mode, ``tests/object_store.py``).
Per ``--rows`` size (default 1M and 8M) a table like ``bench_scale.py``'s (20 float32 columns, 3
string columns, target ``y``; Parquet files of 1M rows, row groups of 65,536 rows) is written to
``s3://<bucket>/table/`` one file at a time, then one epoch of the real CLI runs as the cluster's
driver, in a working folder the executors cannot see::

    python -m deepspark train --data s3://<bucket>/table/ --target y --epochs 1 --model mlp \\
        --workers 2 --launcher spark --store s3://<bucket>/store --max-memory 64 --json \\
        --tracking-uri sqlite:///<driver folder>/mlflow.db

at default settings otherwise (``--max-memory 64``: every rank streams its shard, as a table
larger than a worker's memory would). On a cluster the executors read the table's files
themselves (one file per Spark task) and write the shards into the store for both streaming
passes (``training/prepare_spark.py``); the ranks stream their shards from the store. Each
size gets a bucket of its own, emptied afterwards (moto holds objects in memory); JAX's
compilation cache is off everywhere.

Memory is measured from inside each process where it lives:

- ``driver``: ``ru_maxrss_mb``, the kernel's peak for the driver's Python process (``os.wait4``:
  what every row would pass through if the driver read the table); ``tree_peak_rss_mb``, the
  driver's process tree (its Spark JVM included) sampled from ``/proc`` every 0.2 s.
- ``workers``: every Python process the workers start (the executor's PySpark daemon, its forked
  task workers, which run the scan and encode tasks, and each rank's training process
  ``python -m deepspark.distributed._entry``) records its own peak in a file: the workers get a
  ``sitecustomize`` module (written by this script into a folder on their ``PYTHONPATH``) that
  writes ``getrusage(RUSAGE_SELF).ru_maxrss`` and ``VmHWM`` (``/proc/self/status``) every 0.5 s
  and at exit, nothing else; deepspark's code is unchanged. Per worker (told apart by mount
  namespace): ``rank_peak_rss_mb`` (the rank process's ``VmHWM``: the peak of its own image,
  without the forking parent's pages that ``ru_maxrss`` carries over an ``exec``),
  ``rank_ru_maxrss_mb``, ``task_worker_peak_rss_mb`` (the largest forked task worker) and
  ``tree_peak_rss_mb`` (the worker's whole process tree, JVMs included, sampled every 0.2 s).
- ``epoch_seconds`` and ``train_rows_per_s``: rank 0's ``epoch 1/1 ... (N s)`` line in its
  executor's log; ``driver_evidence``: the driver's log lines that say the executors did both
  passes (``statistics pass: N Spark tasks``, ``executors wrote N shard files``).

Goals (largest size over smallest, 8M / 1M by default): ``worker_rank_rss_ratio`` (the larger
of the two ranks' ``rank_peak_rss_mb``) <= 1.15 and ``driver_rss_ratio`` (the driver's
``ru_maxrss_mb``) <= 1.15: memory flat in the table size on every host, no row through the
driver. ``seconds_per_size``: writing the table, the run and the clean-up of each size.
Usage: ``python benchmarks/bench_cluster_scale.py --json [--rows 1000000,8000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

# The harness lives in the repository's tests (its root on sys.path); this folder is on
# sys.path when run as a script (bench_scale, bench_fit_overhead).
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_fit_overhead import closing_figures  # noqa: E402
from bench_scale import (  # noqa: E402
    EPOCH_LINE,
    MB,
    POLL_SECONDS,
    STREAM_MEMORY_MB,
    parse_sizes,
    run_cli,
    tree_rss_bytes,
    write_table,
)

GOAL_RSS_RATIO = 1.15
WORKERS = 2
RSS_DIR_ENV = "BENCH_RSS_DIR"
ENTRY_MODULE = "deepspark/distributed/_entry.py"
DRIVER_EVIDENCE = re.compile(r"statistics pass: \d+ Spark tasks|executors wrote \d+ shard files")

# The workers' sitecustomize: every Python process started under a worker reports its own peak.
RSS_HOOK = '''"""Written by benchmarks/bench_cluster_scale.py: this process's peak memory
(getrusage's ru_maxrss and /proc/self/status' VmHWM) in $BENCH_RSS_DIR/<pid>.json, every 0.5 s
and at exit."""
import atexit, json, os, resource, sys, threading, time

_FOLDER = os.environ.get("BENCH_RSS_DIR")
_FORKED = [False]


def _vm_hwm_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _record():
    pid = os.getpid()
    record = {
        "pid": pid, "argv": list(sys.argv), "forked": _FORKED[0], "rank": os.environ.get("RANK"),
        "mount_namespace": os.readlink("/proc/self/ns/mnt"), "time": time.time(),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vm_hwm_kb": _vm_hwm_kb(),
    }
    path = os.path.join(_FOLDER, f"{pid}.json")
    temporary = f"{path}.{threading.get_ident()}.tmp"
    with open(temporary, "w") as handle:
        json.dump(record, handle)
    os.replace(temporary, path)


def _report_forever():
    while True:
        try:
            _record()
        except Exception:
            pass
        time.sleep(0.5)


def _start():
    threading.Thread(target=_report_forever, name="bench-rss", daemon=True).start()


def _after_fork():
    _FORKED[0] = True
    _start()


if _FOLDER:
    _start()
    atexit.register(_record)
    os.register_at_fork(after_in_child=_after_fork)
'''


def start_harness(scratch: Path):
    """(S3 server, cluster, driver folder, records folder): the driver folder hidden from the
    executors, the hook on the workers' ``PYTHONPATH``, S3 variables in this process too."""
    from tests.cluster.harness import start_cluster
    from tests.object_store import start_s3_server

    driver_dir, hook_dir, records = scratch / "driver", scratch / "hook", scratch / "rss"
    for folder in (driver_dir, hook_dir, records):
        folder.mkdir()
    (hook_dir / "sitecustomize.py").write_text(RSS_HOOK)
    server = start_s3_server()
    os.environ.update(server.env)  # this process writes the tables
    python_path = os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")]))
    worker_env = {
        **server.env,
        "PYTHONPATH": python_path,
        RSS_DIR_ENV: str(records),
        "DEEPSPARK_JAX_CACHE": "off",
    }
    try:
        cluster = start_cluster(hidden=[driver_dir], workers=WORKERS, extra_env=worker_env)
    except BaseException:
        server.stop()
        raise
    return server, cluster, driver_dir, records


class TreeSampler:
    """Peak RSS of each worker's process tree (worker JVM, executor JVM, Python), sampled every
    ``POLL_SECONDS`` in a thread while a run lasts."""

    def __init__(self, roots: list[int]):
        self.roots, self.peaks = roots, [0] * len(roots)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.is_set():
            for index, root in enumerate(self.roots):
                self.peaks[index] = max(self.peaks[index], tree_rss_bytes(root))
            self._done.wait(POLL_SECONDS)


def wait_for_executors_to_end(cluster, timeout: float = 60) -> None:
    """After the driver exits the master ends its executors (and their Python processes)."""
    deadline = time.monotonic() + timeout
    while any(cluster.executor_pids(worker) for worker in range(WORKERS)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"executors still run {timeout} s after the driver exited")
        time.sleep(0.2)


def read_records(records: Path) -> list[dict]:
    """The hook's records (one per process), the folder emptied for the next run."""
    found = []
    for path in records.glob("*.json"):
        found.append(json.loads(path.read_text()))
    for path in records.iterdir():
        path.unlink()
    return found


def worker_figures(cluster, records: list[dict], tree_peaks: list[int]) -> list[dict]:
    """Per worker: its rank process's peak, its largest task worker's, its tree's."""
    namespaces = [os.readlink(f"/proc/{pid}/ns/mnt") for pid in cluster.worker_pids]
    figures = []
    for index, namespace in enumerate(namespaces):
        mine = [record for record in records if record["mount_namespace"] == namespace]
        ranks = [r for r in mine if r["argv"] and r["argv"][0].endswith(ENTRY_MODULE)]
        tasks = [r for r in mine if r["forked"] and r not in ranks]
        figures.append(
            {
                "worker": index,
                "ranks": sorted({int(r["rank"]) for r in ranks if r["rank"] is not None}),
                "rank_processes": len(ranks),
                "rank_peak_rss_mb": _peak_mb(ranks, "vm_hwm_kb"),
                "rank_ru_maxrss_mb": _peak_mb(ranks, "ru_maxrss_kb"),
                "task_workers": len(tasks),
                "task_worker_peak_rss_mb": _peak_mb(tasks, "vm_hwm_kb"),
                "python_processes": len(mine),
                "tree_peak_rss_mb": round(tree_peaks[index] / MB),
            }
        )
    return figures


def _peak_mb(records: list[dict], key: str) -> int | None:
    return round(max(r[key] for r in records) / 1024) if records else None


def application_folders(cluster) -> set[Path]:
    """The workers' folders of every application run so far (one per application and worker)."""
    return set(cluster.root.glob("worker-*/work/app-*"))


def rank0_epoch_seconds(folders: set[Path]) -> float | None:
    """Rank 0's epoch line (only rank 0 logs progress), from the executors' stderr files of one
    application's folders."""
    for log in sorted(log for folder in folders for log in folder.glob("*/stderr")):
        for line in log.read_text(errors="replace").splitlines():
            if found := EPOCH_LINE.search(line):
                return float(found.group(1))
    return None


def driver_timeline(run: dict) -> list[str]:
    """The driver's INFO lines with their time from its start: where its seconds went."""
    return [
        f"{seconds:7.1f}s {line.split('INFO', 1)[1].strip()[:160]}"
        for seconds, line in run["stderr"]
        if line.lstrip().startswith("INFO")
    ]


def measure_size(harness, size: int, timeout: float) -> dict:
    """Write the table to a fresh bucket, train one epoch on the cluster, measure, clean up."""
    server, cluster, driver_dir, records = harness
    started = time.perf_counter()
    bucket = server.create_bucket()
    try:
        table = write_table(f"{bucket.uri}/table", size)
        print(f"[bench_cluster_scale] {size} rows: {json.dumps(table)}", file=sys.stderr)
        argv = [
            f"--data={bucket.uri}/table/", "--target=y", "--epochs=1", "--model=mlp",
            f"--workers={WORKERS}", "--launcher=spark", f"--store={bucket.uri}/store",
            f"--max-memory={STREAM_MEMORY_MB}", "--json", f"--run-name=cluster-{size}",
            f"--tracking-uri=sqlite:///{driver_dir}/mlflow.db",
        ]  # fmt: skip
        earlier = application_folders(cluster)
        with TreeSampler(cluster.worker_pids) as sampler:
            run = run_cli(argv, timeout=timeout, extra_env=cluster.env, cwd=driver_dir)
            wait_for_executors_to_end(cluster)
        epoch_seconds = rank0_epoch_seconds(application_folders(cluster) - earlier)
        workers = worker_figures(cluster, read_records(records), sampler.peaks)
    finally:
        server.delete_bucket(bucket.name)
    figures = size_figures(run, table, workers, epoch_seconds)
    figures["seconds"] = round(time.perf_counter() - started)
    print(f"[bench_cluster_scale] {size}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


def size_figures(run: dict, table: dict, workers: list[dict], epoch_seconds) -> dict:
    """One size's figures from the driver run, the workers' records and rank 0's log."""
    lines = [line for _, line in run["stderr"]]
    figures = {
        "table": table,
        "driver": {
            "ru_maxrss_mb": run["ru_maxrss_mb"],
            "tree_peak_rss_mb": run["driver_peak_rss_mb"],
            "wall_seconds": round(run["wall"], 1),
        },
        "workers": workers,
        "driver_evidence": [line.strip() for line in lines if DRIVER_EVIDENCE.search(line)],
        "driver_timeline": driver_timeline(run),
        "epoch_seconds": epoch_seconds,
    }
    result = run["result"]
    if result is None:
        return {**figures, "error": f"exit {run['returncode']}: " + "\n".join(lines[-30:])}
    figures["rows"] = result["rows"]
    figures["world_size"] = result.get("world_size")
    figures["val_rmse"] = result["metrics"].get("val_rmse")
    if epoch_seconds:
        figures["train_rows_per_s"] = round(result["rows"]["train"] / epoch_seconds)
    return figures


def cluster_figures(per_size: dict) -> tuple[dict, dict]:
    """(headline figures, goal checks): largest size over smallest for driver and ranks."""
    smallest, largest = per_size[next(iter(per_size))], per_size[list(per_size)[-1]]

    def ratio(value) -> float | None:
        low, high = value(smallest), value(largest)
        return round(high / low, 3) if low and high else None

    def rank_peak(figures):
        peaks = [worker["rank_peak_rss_mb"] for worker in figures["workers"]]
        return max(peaks) if peaks and None not in peaks else None

    figures = {
        "driver_ru_maxrss_mb": {size: f["driver"]["ru_maxrss_mb"] for size, f in per_size.items()},
        "driver_tree_peak_rss_mb": {
            size: f["driver"]["tree_peak_rss_mb"] for size, f in per_size.items()
        },
        "worker_rank_peak_rss_mb": {
            size: [w["rank_peak_rss_mb"] for w in f["workers"]] for size, f in per_size.items()
        },
        "worker_task_peak_rss_mb": {
            size: [w["task_worker_peak_rss_mb"] for w in f["workers"]]
            for size, f in per_size.items()
        },
        "driver_rss_ratio": ratio(lambda f: f["driver"]["ru_maxrss_mb"]),
        "driver_tree_rss_ratio": ratio(lambda f: f["driver"]["tree_peak_rss_mb"]),
        "worker_rank_rss_ratio": ratio(rank_peak),
        "worker_task_rss_ratio": ratio(
            lambda f: max((w["task_worker_peak_rss_mb"] or 0) for w in f["workers"])
        ),
        "train_rows_per_s": {size: f.get("train_rows_per_s") for size, f in per_size.items()},
        "seconds_per_size": {size: f["seconds"] for size, f in per_size.items()},
    }
    checks = {
        "worker_rss_flat": {"goal_max": GOAL_RSS_RATIO, "value": figures["worker_rank_rss_ratio"]},
        "driver_rss_flat": {"goal_max": GOAL_RSS_RATIO, "value": figures["driver_rss_ratio"]},
    }
    for check in checks.values():
        check["pass"] = check["value"] is not None and check["value"] <= check["goal_max"]
    return figures, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=parse_sizes, default="1000000,8000000")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per CLI run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="bench-cluster-scale-"))
    harness = start_harness(scratch)
    server, cluster = harness[0], harness[1]
    try:
        per_size = {str(size): measure_size(harness, size, args.timeout) for size in args.rows}
    finally:
        cluster.stop()
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    figures, checks = cluster_figures(per_size)
    result = {
        "benchmark": "cluster_scale",
        "keras_backend": os.environ.get("KERAS_BACKEND", "jax"),
        "workers": WORKERS,
        "cores_per_worker": 1,
        "stream_max_memory_mb": STREAM_MEMORY_MB,
        "cluster_start_seconds": round(cluster.start_seconds, 1),
        **figures,
        "sizes": per_size,
        **closing_figures(checks, started, load_at_start),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
