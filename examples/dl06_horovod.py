"""DL 06 - Distributed training, Horovod style: data-parallel ``fit`` on several workers.

Horovod's recipe is one line in your code (``hvd.DistributedOptimizer(optimizer)``) plus a
launcher. deepspark does the same for Keras 3 on JAX and on torch:

- one call: ``deepspark.train(..., workers=2, launcher="local" | "spark" | "horovod")`` shards the
  data, starts the workers, averages gradients every step and logs one MLflow run;
- your own loop: ``deepspark.distributed.DistributedOptimizer`` in a ``train_fn`` started by
  ``deepspark.distributed.run`` (``--own-loop``).

``--launcher horovod`` runs ``horovodrun`` and needs the torch backend
(``KERAS_BACKEND=torch``; Horovod does not support JAX).

Command line equivalent::

    deepspark train --data houses.csv --target median_house_value --workers 2
    deepspark --keras-backend torch train --data houses.csv --target median_house_value \
        --workers 2 --launcher horovod

Run: ``python examples/dl06_horovod.py [--tiny] [--data PATH] [--launcher local|spark|horovod]
[--own-loop]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def own_loop(frame, *, workers: int, launcher: str, epochs: int) -> dict:
    """Horovod's own-code recipe: each rank trains on its shard with a DistributedOptimizer."""
    from deepspark.distributed import run

    numeric = frame.drop(columns=[TARGET]).select_dtypes("number")
    x = ((numeric - numeric.mean()) / numeric.std()).fillna(0.0).to_numpy("float32")
    y = (frame[TARGET] / 100_000.0).to_numpy("float32")
    rows = len(x) // workers * workers  # every rank runs the same number of steps

    def train_fn():
        import keras

        from deepspark.distributed import (
            DistributedOptimizer,
            distributed_callbacks,
            rank,
            size,
        )

        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((x.shape[1],)),
                keras.layers.Dense(20, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
        # The one-line change: wrap the optimizer (the learning rate scaled by the workers).
        model.compile(
            optimizer=DistributedOptimizer(keras.optimizers.Adam(1e-3 * size())), loss="mse"
        )
        history = model.fit(
            x[rank() : rows : size()],
            y[rank() : rows : size()],
            batch_size=32,
            epochs=epochs,
            callbacks=distributed_callbacks(),
            verbose=0,
        )
        return history.history["loss"][-1]

    # Every rank runs train_fn; run() returns what rank 0 returned.
    return {"rank0_final_loss": float(run(train_fn, workers=workers, launcher=launcher))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 06: data-parallel training, Horovod style.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, 2 epochs")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--launcher", default="local", choices=["local", "spark", "horovod"])
    parser.add_argument("--own-loop", action="store_true", help="DistributedOptimizer in a fn")
    args = parser.parse_args(argv)
    if args.launcher == "horovod":
        # Horovod runs on torch only; set before Keras is first imported in this process.
        os.environ["KERAS_BACKEND"] = "torch"

    import pandas as pd

    import deepspark

    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(400, random_state=0)
    epochs = 2 if args.tiny else 20
    figures = {"lab": "DL06", "workers": args.workers, "launcher": args.launcher}
    if args.own_loop:
        figures.update(own_loop(frame, workers=args.workers, launcher=args.launcher, epochs=epochs))
    else:
        result = deepspark.train(
            frame,
            TARGET,
            model="mlp",
            hidden=(32, 16),
            epochs=epochs,
            batch_size=32,
            workers=args.workers,
            launcher=args.launcher,
            keras_backend="torch" if args.launcher == "horovod" else None,
            run_name="dl06-distributed",
        )
        figures.update(
            run_id=result.run_id,
            model_uri=result.model_uri,
            world_size=result.world_size,
            epochs=result.epochs_completed,
            test_rmse=result.metrics["test_rmse"],
        )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
