"""Functions every rank runs in the distributed tests, and the data they share.

Shipped to workers by value (cloudpickle), so worker processes need not import ``tests``; they
import Keras inside, after the worker has chosen its Keras backend.
"""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TRAIN_ROWS = 100  # with a global batch of 16: 6 full batches and a last one of 4
VAL_ROWS = 37  # odd: the two validation shards differ in size (19 and 18 rows)
GLOBAL_BATCH = 16
EPOCHS = 2
LEARNING_RATE = 0.05


def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(TRAIN_ROWS + VAL_ROWS, 5)).astype("float32")
    weights = np.array([1.0, -2.0, 0.5, 3.0, -1.0], dtype="float32")
    target = (features @ weights + 0.3 * features[:, 0] ** 2).reshape(-1, 1).astype("float32")
    return features[:TRAIN_ROWS], target[:TRAIN_ROWS], features[TRAIN_ROWS:], target[TRAIN_ROWS:]


def compiled_model(optimizer):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(
        optimizer=optimizer,
        loss="mse",
        metrics=[
            keras.metrics.RootMeanSquaredError(name="rmse"),
            keras.metrics.MeanAbsoluteError(name="mae"),
        ],
    )
    return model


def single_process_reference() -> dict:
    """Plain Keras, one process, the whole data, the global batch."""
    import keras

    x, y, x_val, y_val = dataset()
    model = compiled_model(keras.optimizers.SGD(LEARNING_RATE))
    history = model.fit(
        x,
        y,
        batch_size=GLOBAL_BATCH,
        epochs=EPOCHS,
        shuffle=False,
        validation_data=(x_val, y_val),
        verbose=0,
    )
    return {"weights": model.get_weights(), "history": history.history}


def fit_on_shard() -> dict:
    """The one-line change: DistributedOptimizer + callbacks, this rank's rows, local batch."""
    import keras

    from deepspark.distributed import DistributedOptimizer, distributed_callbacks, rank, size
    from deepspark.distributed.backends import get_backend

    x, y, x_val, y_val = dataset()
    me, world = rank(), size()
    model = compiled_model(DistributedOptimizer(keras.optimizers.SGD(LEARNING_RATE)))
    history = model.fit(
        x[me::world],
        y[me::world],
        batch_size=GLOBAL_BATCH // world,
        epochs=EPOCHS,
        shuffle=False,
        validation_data=(x_val[me::world], y_val[me::world]),
        verbose=0,
        callbacks=distributed_callbacks(),
    )
    whole_val = model.evaluate(x_val, y_val, return_dict=True, verbose=0)  # no collectives
    return {
        "weights": model.get_weights(),
        "history": history.history,
        "whole_val": whole_val,
        "world": world,
        "optimizer_class": type(model.optimizer).__name__,
        "mode": getattr(get_backend(), "mode", None),
        "process": open("/proc/self/comm").read().strip(),  # deepspark-rankN when forked
    }


def fit_with_nan_on_rank_one() -> dict:
    """Rank 1's second batch has a NaN target; every rank must stop at that same step (a rank
    going on alone would wait in its next allreduce until the group times out)."""
    import keras

    from deepspark.distributed import (
        DistributedNanGuard,
        DistributedOptimizer,
        distributed_callbacks,
        rank,
        size,
    )

    x, y, _, _ = dataset()
    me, world = rank(), size()
    x, y = x[me::world], y[me::world].copy()
    if me == 1:
        y[10] = float("nan")  # local batch size 8: the second batch
    model = compiled_model(DistributedOptimizer(keras.optimizers.SGD(LEARNING_RATE)))
    guard = DistributedNanGuard()
    model.fit(
        x,
        y,
        batch_size=GLOBAL_BATCH // world,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[*distributed_callbacks(), guard],
    )
    return {"failed_at": guard.failed_at, "iterations": int(model.optimizer.iterations.numpy())}


def fail_on_rank_one() -> None:
    """Rank 1 raises while rank 0 waits for it in a collective."""
    from deepspark.distributed import rank
    from deepspark.distributed.backends import get_backend

    if rank() == 1:
        raise ValueError("rank 1 cannot go on")
    get_backend().barrier()


def report_cores(folder: str) -> list[int]:
    """Write this rank's CPU affinity and JAX's view of the host into ``folder``."""
    import json
    import os
    from pathlib import Path

    from deepspark.distributed import rank

    cores = sorted(os.sched_getaffinity(0))
    report = {"cores": cores, "omp": os.environ.get("OMP_NUM_THREADS")}
    Path(folder, f"rank-{rank()}.json").write_text(json.dumps(report))
    return cores
