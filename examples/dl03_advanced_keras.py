"""DL 03 - Advanced Keras: callbacks, checkpoints and TensorBoard.

The course adds ``EarlyStopping``, ``ModelCheckpoint`` and ``TensorBoard`` callbacks to ``fit``.
deepspark already stops early (``patience``), keeps the best epoch and logs every epoch to MLflow;
your own Keras callbacks run after deepspark's (``callbacks=[...]``), ``keep_checkpoints=True``
keeps the best and the last checkpoint as run artifacts, and ``tensorboard=DIR`` writes event
files without TensorFlow.

Command line equivalent::

    deepspark train --data ../shared/data/california_housing.csv \
        --target median_house_value --patience 5 --keep-checkpoints --tensorboard logs --json
    tensorboard --logdir logs

Run: ``python examples/dl03_advanced_keras.py [--tiny] [--data PATH] [--output DIR]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 03: callbacks, checkpoints, TensorBoard.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, 2 epochs")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    parser.add_argument("--output", default="lab-output/dl03", help="folder for logs and CSV")
    args = parser.parse_args(argv)

    import keras
    import pandas as pd

    import deepspark

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(400, random_state=0)

    # Any Keras callback: this one writes each epoch's logs (train and val metrics) to a CSV,
    # a lambda callback collects the validation loss in Python.
    val_losses: list[float] = []
    callbacks = [
        keras.callbacks.CSVLogger(str(output / "history.csv")),
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: val_losses.append(float(logs["val_loss"]))
        ),
    ]
    result = deepspark.train(
        frame,
        TARGET,
        model="mlp",
        hidden=(32, 16),
        epochs=2 if args.tiny else 100,
        patience=5,  # early stopping on the validation loss, best epoch's weights kept
        callbacks=callbacks,
        keep_checkpoints=True,
        tensorboard=str(output / "tensorboard"),
        run_name="dl03-advanced-keras",
    )

    # The best checkpoint (compiled, optimizer state included): train on with fit, or inspect.
    best = deepspark.load_checkpoint(result.run_id, which="best")
    last = deepspark.load_checkpoint(result.run_id, which="last")
    event_files = sorted(str(path) for path in (output / "tensorboard").rglob("events.out.*"))

    figures = {
        "lab": "DL03",
        "run_id": result.run_id,
        "epochs": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "callback_val_losses": val_losses,
        "history_csv": str(output / "history.csv"),
        "best_checkpoint_parameters": int(best.count_params()),
        "last_checkpoint_parameters": int(last.count_params()),
        "tensorboard_event_files": event_files,
        "test_rmse": result.metrics["test_rmse"],
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
