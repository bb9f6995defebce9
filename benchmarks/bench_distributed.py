"""Cost and benefit of deepspark's data-parallel training, per kind of collectives.

Figures (one run, after a warm-up epoch, contenders in turn; samples/s are global):

- ``overhead_world_size_1`` = 1 - (samples/s with ``DistributedOptimizer`` and the distributed
  callbacks at world size 1 / samples/s of the plain ``fit``), on deepspark's default tabular MLP
  (256-128-64, batch 64) over California housing; both in the same worker process, one epoch
  each in turn (ABBA), best epoch against best epoch, like ``bench_fit_overhead.py``
  (``..._median_of_pairs``: median over the back-to-back pairs, which also counts the load other
  processes put on a busy machine). Goal <= 0.05.
  On JAX, ``DistributedOptimizer`` and the callbacks leave a world of one untouched (no
  distribution, nothing to reduce), so this measures what they cost when there is nothing to do.
- ``speedup_2_workers`` = samples/s of 2 workers / samples/s of 1 worker, same global batch, for a
  compute-bound model (a wide MLP); 1 worker may use every core, 2 workers one core each
  (deepspark pins each worker to its share of the cores); best epoch of ``--launches`` launches
  each. ``pinned_scaling_2_workers``: the same 2 workers against 1 worker on 1 core (as two
  1-core hosts would be); goal >= 1.7.
- ``pinned_scaling_2_workers_tabular``: the data-at-scale case, deepspark's default tabular
  model on a generated table like ``bench_scale.py``'s (20 numeric, 3 categorical columns;
  ``--tabular-rows``) at a large table's default batch size (4096), 2 workers on a core each
  against 1 worker on 1 core, same global batch; best epoch of ``--launches`` launches each.
  ``--tabular-only`` measures just this figure.

JAX on CPU trains with host collectives (``deepspark.distributed._jax``): one allreduce of all
gradients per step through torch's gloo, from inside the compiled step. Its SPMD mode
(``DEEPSPARK_JAX_COLLECTIVES=spmd``, the default on accelerators) scales worse on CPU: XLA's CPU
runtime issues one gloo all-reduce per gradient tensor (a 3-layer MLP: 9 of them), and on this
2-vCPU VM each costs about 3.6 ms whatever its size (a raw jitted step of the default MLP at 4096
rows: 11 ms on 1 process, 37 ms on 2).

Collectives (each picks its workers' Keras backend): ``jax`` (Keras on JAX; host collectives on
CPU, see above; local launcher), ``torch`` (Keras on
torch, torch.distributed with gloo on CPU; local launcher) and ``horovod`` (horovodrun), when
Horovod is installed. Usage: ``python benchmarks/bench_distributed.py --json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "california_housing.csv"


def _sharded_fit(model, x, y, *, batch_size: int, epochs: int, callbacks=()) -> float:
    """Global samples/s of the fastest epoch after the first (which includes set-up)."""
    import keras

    from deepspark.distributed import rank, size

    durations = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            durations.append(time.perf_counter() - self.started)

    me, world = rank(), size()
    local_x = (
        {name: value[me::world] for name, value in x.items()}
        if isinstance(x, dict)
        else x[me::world]
    )
    model.fit(
        local_x,
        y[me::world],
        batch_size=batch_size,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[*callbacks, EpochTimer()],
    )
    rows = (len(y) // world) * world
    return rows / min(durations[1:])


def overhead_rank(data_path: str, rounds: int) -> dict:
    """World size 1: plain fit vs the distributed fit of deepspark's default tabular model,
    one epoch each in turn (so load from other processes hits both alike), best round each."""
    from deepspark.config import TrainConfig
    from deepspark.distributed import DistributedOptimizer, distributed_callbacks
    from deepspark.training.fit import build_compiled_model
    from deepspark.training.prepare import prepare_data

    config = TrainConfig(data=data_path, target="median_house_value", batch_size=64)
    prepared = prepare_data(config)
    x, y = prepared.inputs["train"], prepared.targets["train"]
    plain_model = build_compiled_model(prepared)
    distributed_model = build_compiled_model(prepared)
    DistributedOptimizer(distributed_model.optimizer)
    callbacks = distributed_callbacks()
    plain, distributed = [], []
    for round_index in range(rounds + 1):  # the first round warms up both
        # ABBA order: neither contender always runs first (caches, allocator, GC).
        order = ("plain", "distributed") if round_index % 2 == 0 else ("distributed", "plain")
        for contender in order:
            if contender == "plain":
                plain.append(_timed_epoch(plain_model, x, y, batch_size=64))
            else:
                distributed.append(
                    _timed_epoch(distributed_model, x, y, batch_size=64, callbacks=callbacks)
                )
    # Rounds are back-to-back pairs: the median of the pairs' ratios cancels slow drifts in the
    # load other processes put on the machine.
    ratios = [d / p for p, d in zip(plain[1:], distributed[1:], strict=True)]
    return {
        "plain": max(plain[1:]),
        "distributed": max(distributed[1:]),
        "median_ratio": float(np.median(ratios)),
    }


def _timed_epoch(model, x, y, *, batch_size: int, callbacks=()) -> float:
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    return len(y) / (time.perf_counter() - started)


def wide_mlp_rank(global_batch: int, epochs: int) -> float:
    """Compute-bound: a 1024-wide MLP on synthetic rows, one core per worker when several."""
    import keras

    from deepspark.distributed import DistributedOptimizer, distributed_callbacks, size

    world = size()
    if keras.backend.backend() == "torch":  # JAX sizes its pools to the pinned cores itself
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8192, 256)).astype("float32")
    y = rng.normal(size=(8192, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    layers = [keras.Input((256,))]
    layers += [keras.layers.Dense(1024, activation="relu") for _ in range(3)]
    model = keras.Sequential([*layers, keras.layers.Dense(1)])
    model.compile(optimizer=DistributedOptimizer(keras.optimizers.SGD(0.01)), loss="mse")
    return _sharded_fit(
        model,
        x,
        y,
        batch_size=global_batch // world,
        epochs=epochs,
        callbacks=distributed_callbacks(),
    )


def tabular_frame(rows: int, seed: int = 0):
    """bench_scale's kind of table: 20 numeric and 3 categorical columns, a learnable ``y``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {f"x{index}": rng.normal(size=rows).astype("float32") for index in range(20)}
    for name, levels in (("c10", 10), ("c25", 25), ("c50", 50)):
        data[name] = rng.integers(0, levels, size=rows).astype(str)
    data["y"] = sum(data[f"x{index}"] for index in range(5)) + rng.normal(size=rows)
    return pd.DataFrame(data)


def tabular_rank(rows: int, global_batch: int, epochs: int) -> float:
    """deepspark's default tabular model on a generated table at a large table's default
    batch size, the data-at-scale case: one core per worker."""
    import keras

    from deepspark.config import TrainConfig
    from deepspark.distributed import DistributedOptimizer, distributed_callbacks, size
    from deepspark.training.fit import build_compiled_model
    from deepspark.training.prepare import prepare_data

    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
    config = TrainConfig(data="generated", target="y", batch_size=global_batch, seed=0)
    prepared = prepare_data(config, data=tabular_frame(rows))
    model = build_compiled_model(prepared)
    DistributedOptimizer(model.optimizer)
    x, y = prepared.inputs["train"], prepared.targets["train"]
    return _sharded_fit(
        model,
        x,
        y,
        batch_size=global_batch // size(),
        epochs=epochs,
        callbacks=distributed_callbacks(),
    )


def measure(collectives: str, args) -> dict:
    from deepspark.distributed import run

    launcher = "horovod" if collectives == "horovod" else "local"
    settings = {"launcher": launcher, "collectives": collectives}
    figures = {}
    if not (args.scaling_only or args.tabular_only):
        overhead = run(overhead_rank, (str(args.data), args.repeats), workers=1, **settings)
        figures = {
            "overhead_world_size_1": round(1 - overhead["distributed"] / overhead["plain"], 4),
            "overhead_world_size_1_median_of_pairs": round(1 - overhead["median_ratio"], 4),
            "samples_per_s_plain_fit": round(overhead["plain"], 1),
            "samples_per_s_distributed_world_size_1": round(overhead["distributed"], 1),
        }
    tab_one, tab_two = 0.0, 0.0
    tab_job = (args.tabular_rows, args.tabular_batch, args.epochs)
    for _ in range(args.launches):
        with _cores_per_worker(1):
            tab_one = max(tab_one, run(tabular_rank, tab_job, workers=1, **settings))
        tab_two = max(tab_two, run(tabular_rank, tab_job, workers=2, **settings))
    figures |= {
        "pinned_scaling_2_workers_tabular": round(tab_two / tab_one, 3),
        "tabular_rows_per_s_1_worker_1_core": round(tab_one, 1),
        "tabular_rows_per_s_2_workers_1_core_each": round(tab_two, 1),
    }
    if args.tabular_only:
        return figures
    one, one_pinned, two = 0.0, 0.0, 0.0
    for _ in range(args.launches):  # alternate, so that load from other processes hits both
        job = (args.global_batch, args.epochs)
        one = max(one, run(wide_mlp_rank, job, workers=1, **settings))
        with _cores_per_worker(1):  # as on a 1-core host
            one_pinned = max(one_pinned, run(wide_mlp_rank, job, workers=1, **settings))
        two = max(two, run(wide_mlp_rank, job, workers=2, **settings))  # pinned: a core each
    return {
        **figures,
        "speedup_2_workers": round(two / one, 3),
        "pinned_scaling_2_workers": round(two / one_pinned, 3),
        "wide_mlp_samples_per_s_1_worker_all_cores": round(one, 1),
        "wide_mlp_samples_per_s_1_worker_1_core": round(one_pinned, 1),
        "wide_mlp_samples_per_s_2_workers_1_core_each": round(two, 1),
    }


@contextlib.contextmanager
def _cores_per_worker(cores: int):
    """Workers started inside get ``cores`` cores each (deepspark.distributed.cores)."""
    kept = os.environ.get("DEEPSPARK_CORES_PER_WORKER")
    os.environ["DEEPSPARK_CORES_PER_WORKER"] = str(cores)
    try:
        yield
    finally:
        if kept is None:
            os.environ.pop("DEEPSPARK_CORES_PER_WORKER", None)
        else:
            os.environ["DEEPSPARK_CORES_PER_WORKER"] = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=10, help="Timed epoch pairs.")
    parser.add_argument("--launches", type=int, default=2, help="Launches per worker count.")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--collectives", default="jax,torch,horovod")
    parser.add_argument("--tabular-rows", type=int, default=262_144)
    parser.add_argument("--tabular-batch", type=int, default=4096, help="A large table's default.")
    parser.add_argument("--scaling-only", action="store_true", help="Skip the overhead part.")
    parser.add_argument(
        "--tabular-only", action="store_true", help="Only the tabular pinned scaling."
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    figures = {"cpu_count": os.cpu_count()}
    for collectives in args.collectives.split(","):
        if collectives == "horovod":
            try:
                import horovod.torch  # noqa: F401
            except ImportError:
                figures["horovod"] = "not installed (make horovod)"
                continue
        figures[collectives] = measure(collectives, args)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")


if __name__ == "__main__":
    main()
