"""DL 02 - Keras: a dense network on California housing with train / validation / test splits.

The course builds ``Sequential([Dense(20, relu), Dense(20, relu), Dense(1)])``, trains on the
training split, watches the validation loss and scores the test split once. deepspark does the
splits (a seeded per-row hash: 70 / 15 / 15), the preprocessing (inside the saved model) and the
tracking; you bring the Keras body and deepspark adds the input layers and the output unit.

Command line equivalent::

    deepspark train --data ../shared/data/california_housing.csv \
        --target median_house_value --model mlp --hidden 20,20 --json

Run: ``python examples/dl02_keras.py [--tiny] [--data PATH]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 02: a Keras dense network with deepspark.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, 2 epochs")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import pandas as pd

    import deepspark

    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(400, random_state=0)

    # The lab's network, as a Keras body: deepspark puts its preprocessing in front of it and
    # the regression unit behind it, so the logged model takes raw columns.
    body = keras.Sequential(
        [keras.layers.Dense(20, activation="relu"), keras.layers.Dense(20, activation="relu")]
    )
    result = deepspark.train(
        frame,
        TARGET,
        model=body,
        epochs=2 if args.tiny else 100,
        batch_size=64,
        run_name="dl02-keras",
    )

    # The logged model scores raw rows: the same columns the CSV has.
    model = deepspark.load_model(result.model_uri)
    sample = frame.drop(columns=[TARGET]).head(5)
    predictions = model.predict(sample)["prediction"].to_numpy()

    figures = {
        "lab": "DL02",
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "rows": result.rows,  # train / val / test row counts
        "epochs": result.epochs_completed,
        "val_rmse": result.metrics["val_rmse"],
        "test_rmse": result.metrics["test_rmse"],
        "test_r2": result.metrics.get("test_r2"),
        "first_predictions": [float(value) for value in predictions],
        "first_targets": [float(value) for value in frame[TARGET].head(5)],
        "all_finite": bool(np.isfinite(predictions).all()),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
