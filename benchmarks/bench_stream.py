"""Streaming shard files into ``model.fit`` (``deepspark.store.stream.ShardStream``) against the
same rows in memory.

One run, one process (Keras on ``KERAS_BACKEND``, default ``jax``). The data: ``--rows`` rows
(default 1M) of 20 float32 numeric inputs and 3 int32 categorical codes (10 levels each) with a
regression target, written in deepspark's shard format (``distributed.shards.arrays_to_table``)
to one Parquet file with row groups of ``--row-group-rows`` rows (default 65,536: about 6 MB of
decoded rows each, large enough that a read's fixed cost, an object-store request above all, is
small against its transfer, small enough that a shuffled epoch draws its row-group order from
16 row groups per million rows and that a 64k-row shuffle buffer holds one or two of them; the
shard writer uses the same size). Figures:

- ``loader``: rows/s iterating one epoch of the stream, no model (``shuffled``: the default
  shuffle buffer; ``file_order``: ``shuffle=False``), best of ``--repeats``.
- per batch size (``--batch-sizes``, default 256 and 2048): ``model.fit`` of an MLP built by
  deepspark's ``mlp`` builder (Dense 64-64, one-hot categories, standardised numbers) on the
  stream and on the arrays (``fit(x, y, shuffle=True)``), two epochs each from the same initial
  weights: rows/s of the second epoch (the first compiles), best of ``--repeats``, the two
  interleaved; ``ratio_streamed_vs_in_memory`` = streamed / in memory.

Goal (the streaming loader's brief): ratio >= 0.8 at 1M rows for every batch size; ``goals``
prints each with its pass flag. On the torch backend, a machine loaded by other work slows
torch's intra-op threads (each op waits for its slowest thread) and makes both fits vary several
fold between repeats; ``--torch-threads 1`` gives steadier figures there.
Usage: ``python benchmarks/bench_stream.py --json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

# Timing and closing figures shared with the other benchmarks (this folder is on sys.path when
# run as a script).
from bench_fit_overhead import closing_figures, epoch_timer

GOAL_RATIO = 0.8
NUMERIC_COLUMNS = 20
CATEGORICAL_COLUMNS = 3
LEVELS = 10


def make_arrays(rows: int, seed: int = 0):
    """Inputs by name (``numeric``, ``categorical``) and a learnable regression target."""
    from deepspark.data.encoding import CATEGORICAL_INPUT, FIRST_LEVEL_CODE, NUMERIC_INPUT

    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, NUMERIC_COLUMNS)).astype(np.float32)
    codes = rng.integers(0, LEVELS, size=(rows, CATEGORICAL_COLUMNS)).astype(np.int32)
    weights = rng.normal(size=NUMERIC_COLUMNS).astype(np.float32)
    target = numeric @ weights + 0.5 * codes[:, 0] + rng.normal(scale=0.1, size=rows)
    inputs = {NUMERIC_INPUT: numeric, CATEGORICAL_INPUT: codes + FIRST_LEVEL_CODE}
    return inputs, target.astype(np.float32)


def write_shard_file(inputs, target, path: Path, row_group_rows: int) -> float:
    """The rows as one shard file; returns the seconds it took."""
    import pyarrow.parquet as pq

    from deepspark.distributed.shards import arrays_to_table

    started = time.perf_counter()
    pq.write_table(arrays_to_table(inputs, target), path, row_group_size=row_group_rows)
    return time.perf_counter() - started


def build_model(inputs, seed: int = 0):
    """deepspark's MLP (Dense 64-64) for the table, compiled with Adam and MSE."""
    import keras

    from deepspark.config import TrainConfig
    from deepspark.data.schema import CATEGORICAL, NUMERIC, FeatureSchema, FeatureSpec
    from deepspark.models.mlp import build_mlp
    from deepspark.models.preprocessing import fit_numeric_stats

    features = [FeatureSpec(f"x{i}", NUMERIC, "float32") for i in range(NUMERIC_COLUMNS)]
    vocabulary = tuple(f"level{i}" for i in range(LEVELS))
    features += [
        FeatureSpec(f"c{i}", CATEGORICAL, "object", vocabulary) for i in range(CATEGORICAL_COLUMNS)
    ]
    schema = FeatureSchema(tuple(features), target="y", task="regression")
    config = TrainConfig(data="synthetic", target="y", hidden=(64, 64))
    keras.utils.set_random_seed(seed)
    stats = fit_numeric_stats(inputs["numeric"][:10_000])
    model = build_mlp(schema, stats, config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def time_loader(path: Path, batch_size: int, *, shuffle: bool) -> float:
    """Rows/s of one epoch of the stream, iterated as Keras does (index by index)."""
    from deepspark.store.stream import ShardStream

    with ShardStream([str(path)], batch_size=batch_size, shuffle=shuffle) as stream:
        started = time.perf_counter()
        for index in range(len(stream)):
            stream[index]
        seconds = time.perf_counter() - started
        rows = stream.rows
    return rows / seconds


def time_fit(model, weights, data: dict, rows: int) -> float:
    """Rows/s of the second of two epochs of ``model.fit(**data)`` from ``weights``."""
    timer = epoch_timer()
    model.set_weights(weights)
    model.fit(**data, epochs=2, verbose=0, callbacks=[timer])
    return rows / timer.durations[-1]


def measure_batch(args, path: Path, inputs, target, batch_size: int) -> dict:
    """Streamed and in-memory fits at one batch size, interleaved."""
    from deepspark.store.stream import ShardStream

    model = build_model(inputs)
    weights = model.get_weights()
    rows = len(target)
    in_memory = {"x": inputs, "y": target, "batch_size": batch_size, "shuffle": True}
    figures = {"streamed": [], "in_memory": []}
    for repeat in range(args.repeats):
        figures["in_memory"].append(time_fit(model, weights, in_memory, rows))
        with ShardStream([str(path)], batch_size=batch_size, seed=repeat) as stream:
            figures["streamed"].append(time_fit(model, weights, {"x": stream}, rows))
    streamed, memory = max(figures["streamed"]), max(figures["in_memory"])
    return {
        "rows_per_s_streamed": round(streamed),
        "rows_per_s_in_memory": round(memory),
        "ratio_streamed_vs_in_memory": round(streamed / memory, 3),
        "all_rows_per_s": {
            name: [round(value) for value in values] for name, values in figures.items()
        },
    }


def goal_checks(batches: dict) -> dict:
    return {
        f"batch_{size}": {
            "goal_ratio_streamed_vs_in_memory": GOAL_RATIO,
            "ratio_streamed_vs_in_memory": figures["ratio_streamed_vs_in_memory"],
            "pass": figures["ratio_streamed_vs_in_memory"] >= GOAL_RATIO,
        }
        for size, figures in batches.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--row-group-rows", type=int, default=65_536)
    parser.add_argument("--batch-sizes", default="256,2048")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads on the torch backend (default: torch's own choice)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    from deepspark._backend import backend_name, import_keras

    import_keras()
    if backend_name() == "torch" and args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    inputs, target = make_arrays(args.rows)
    batch_sizes = [int(part) for part in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as scratch:
        path = Path(scratch) / "train-00000-of-00001.parquet"
        write_seconds = write_shard_file(inputs, target, path, args.row_group_rows)
        loader = {
            name: round(max(time_loader(path, 256, shuffle=shuffle) for _ in range(args.repeats)))
            for name, shuffle in (("shuffled", True), ("file_order", False))
        }
        batches = {
            str(size): measure_batch(args, path, inputs, target, size) for size in batch_sizes
        }
        file_mb = path.stat().st_size / 1e6
    checks = goal_checks(batches)
    result = {
        "benchmark": "stream",
        "keras_backend": backend_name(),
        "torch_threads": args.torch_threads,
        "rows": args.rows,
        "row_group_rows": args.row_group_rows,
        "file_mb": round(file_mb, 1),
        "write_seconds": round(write_seconds, 2),
        "loader_rows_per_s_batch_256": loader,
        "fit": batches,
        **closing_figures(checks, started, load_at_start),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
