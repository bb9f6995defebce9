"""Accuracy check of issue 10: a from-scratch CNN on the CIFAR-10 JPEGs within 10 minutes.

The goal: "a from-scratch CNN on the CIFAR-10 JPEGs (70/15/15 split of the 10,000) reaches >= 0.60
test accuracy on this machine within 10 minutes, and beats the same-budget MLP on raw pixels by
>= 15 points. Report the curve."

Both models are trained by ``deepspark.train`` on the 10,000 CIFAR-10 test JPEGs of
``../shared/data/images`` (extracted to a temporary folder; nothing is downloaded), split 70/15/15
(stratified, seed 42, deepspark's defaults), at 32x32. deepspark has no time-budget option, so the
budget is kept by a Keras callback put in front of deepspark's own (through ``fit.run_fit``'s
``first_callbacks``, patched for the call; nothing in deepspark changes): after each epoch it
stops training when one more epoch (as long as the slowest so far) would end past the budget less
a reserve for the final evaluation and model logging. The budget counts from the
``deepspark.train`` call (decoding, set-up and compilation included) to its return; ``seconds``
reports it. Early stopping keeps its usual role: the weights kept are those of the best
validation loss, and a model that stops improving ends sooner than the budget.

- CNN: ``model="cnn"`` with ``CNN_SETTINGS``: deepspark's defaults (filters 32,64,128, batch
  norm, no dropout, no augmentation, batch 64, Adam 2e-3) except ``patience=6``, which makes the
  plateau schedule halve the learning rate after 2 epochs without a better validation loss
  (deepspark derives that patience as ``max(2, patience // 3)``: 10 epochs at the old default
  ``patience=30``, so the rate never dropped within a 10-minute budget; images now default to
  ``patience=10``, halving after 3). Measured on this machine
  (seed 42, 14 epochs each, 2 cores shared with other developers' jobs at load 6-10):

  ====================================  =============  ==========  ====================
  settings                              test accuracy  best epoch  val accuracy (peak)
  ====================================  =============  ==========  ====================
  defaults then (``patience=30``)       0.549          6           0.567 (0.638)
  ``patience=6``                        0.659          11          0.685 (0.696)
  ``patience=6, dropout=0.2``           0.673          14          0.693 (0.693)
  ``augment=True, dropout=0.2``, 600 s  0.449 (6 ep.)  5           0.471 (0.488)
  ====================================  =============  ==========  ====================

  The defaults overfit (train accuracy 0.97 at epoch 14) and, as validation loss rises after
  epoch 6 while validation accuracy still improves, early stopping restores epoch 6. ``--cnn``
  tries other settings (JSON).
- MLP: ``model="mlp"`` on raw pixels (scaled to [0, 1], flattened), ``hidden=(512, 256)``,
  deepspark's defaults otherwise, the same budget.

Output (``--json``: one JSON object): per model test and validation accuracy, seconds, epochs,
epoch seconds and the per-epoch ``val_accuracy`` / ``train_accuracy`` curves (MLflow metric
history), ``cnn_minus_mlp_points``, the goals with pass flags, and how much of the machine the run
got: the 1-minute load average at start and end, and ``cpu_share`` (this process's CPU seconds /
(seconds x cores)): a machine busy with other work trains fewer epochs in the budget.

Usage: ``python benchmarks/cifar_accuracy.py --json`` (10 to 20 minutes: two 10-minute budgets,
the MLP usually stopping early).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

CIFAR_ARCHIVE = Path(__file__).resolve().parents[2] / "shared/data/images/cifar10_test_jpg.tar.gz"
CNN_SETTINGS = {"patience": 6}
MLP_SETTINGS = {"hidden": (512, 256)}
COMMON_SETTINGS = {"image_size": (32, 32), "epochs": 300}
# Seconds kept free at the end of the budget for evaluating the model and logging it to MLflow.
RESERVE_SECONDS = 15.0
GOALS = {"cnn_test_accuracy": 0.60, "cnn_minus_mlp_points": 15.0}


def budget_stop(budget_seconds: float, started: float):
    """A Keras callback ending training when the next epoch would not finish in the budget;
    ``.durations`` holds each epoch's seconds."""
    import keras

    class BudgetStop(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.durations: list[float] = []
            self.epoch_started = 0.0
            self.stopped_for_budget = False

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.durations.append(now - self.epoch_started)
            shown = {key: round(float(value), 4) for key, value in (logs or {}).items()}
            print(f"epoch {epoch + 1}: {now - self.epoch_started:.1f}s {shown}", file=sys.stderr)
            # The slowest epoch after the first (which compiles) predicts the next one.
            next_epoch = max(self.durations[1:] or self.durations)
            if now - started + next_epoch > budget_seconds - RESERVE_SECONDS:
                self.stopped_for_budget = True
                self.model.stop_training = True

    return BudgetStop()


@contextlib.contextmanager
def first_callback(callback):
    """Put ``callback`` in front of deepspark's callbacks for fits in this block (a wrapper
    around ``fit.run_fit``; nothing in deepspark changes)."""
    from deepspark.training import fit as fit_module

    run_fit = fit_module.run_fit

    def run_fit_with_callback(*args, first_callbacks=(), **kwargs):
        return run_fit(*args, first_callbacks=(callback, *first_callbacks), **kwargs)

    fit_module.run_fit = run_fit_with_callback
    try:
        yield
    finally:
        fit_module.run_fit = run_fit


def metric_curve(tracking_uri: str, run_id: str, name: str, epochs: int) -> list[float]:
    """``name`` per epoch (the final evaluation, logged at step ``epochs``, left out)."""
    import mlflow

    history = mlflow.MlflowClient(tracking_uri).get_metric_history(run_id, name)
    by_step = {metric.step: metric.value for metric in history if metric.step < epochs}
    return [round(by_step[step], 4) for step in sorted(by_step)]


def train_within_budget(folder: Path, model: str, settings: dict, args) -> dict:
    import deepspark

    started, cpu_started = time.perf_counter(), time.process_time()
    load_at_start = os.getloadavg()[0]
    budget = float("inf") if args.epochs else args.budget_seconds
    stopper = budget_stop(budget, started)
    with first_callback(stopper):
        result = deepspark.train(
            str(folder),
            model=model,
            tracking_uri=args.tracking_uri,
            seed=args.seed,
            **{**COMMON_SETTINGS, **settings, **({"epochs": args.epochs} if args.epochs else {})},
        )
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    epochs = result.epochs_completed
    curve = {
        name: metric_curve(result.tracking_uri, result.run_id, name, epochs)
        for name in ("val_accuracy", "train_accuracy", "val_loss")
    }
    return {
        "model": model,
        "settings": {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in settings.items()
        },
        "test_accuracy": round(result.metrics["test_accuracy"], 4),
        "val_accuracy": round(result.metrics["val_accuracy"], 4),
        "seconds": round(seconds, 1),
        "train_result_seconds": result.seconds,
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "stopped_for_budget": stopper.stopped_for_budget,
        "stopped_early": result.stopped_early and not stopper.stopped_for_budget,
        "epoch_seconds": [round(value, 1) for value in stopper.durations],
        "val_accuracy_curve": curve["val_accuracy"],
        "train_accuracy_curve": curve["train_accuracy"],
        "val_loss_curve": curve["val_loss"],
        "rows": result.rows,
        # CPU time this process got: on an idle machine close to seconds x cores.
        "cpu_seconds": round(cpu_seconds, 1),
        "cpu_share": round(cpu_seconds / (seconds * len(os.sched_getaffinity(0))), 3),
        "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
    }


def goal_checks(results: dict) -> dict:
    cnn = results.get("cnn")
    values = {
        "cnn_test_accuracy": cnn["test_accuracy"] if cnn else None,
        "cnn_minus_mlp_points": results.get("cnn_minus_mlp_points"),
    }
    within = cnn is not None and cnn["seconds"] <= 600
    checks = {
        name: {"goal": GOALS[name], "value": value, "pass": value is not None and value >= goal}
        for (name, value), goal in zip(values.items(), GOALS.values(), strict=True)
    }
    checks["cnn_within_10_minutes"] = {"goal": 600, "value": cnn and cnn["seconds"], "pass": within}
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget-seconds", type=float, default=600.0)
    parser.add_argument("--models", default="cnn,mlp", help="comma-separated: cnn, mlp")
    parser.add_argument("--cnn", type=json.loads, default=CNN_SETTINGS, help="JSON settings")
    parser.add_argument("--mlp", type=json.loads, default=MLP_SETTINGS, help="JSON settings")
    parser.add_argument(
        "--epochs", type=int, help="train this many epochs (no budget stop), e.g. for a curve"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict = {"benchmark": "cifar_accuracy", "budget_seconds": args.budget_seconds}
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(Path(scratch) / "checkpoints")
        args.tracking_uri = f"sqlite:///{scratch}/mlflow.db"
        with tarfile.open(CIFAR_ARCHIVE) as archive:
            archive.extractall(scratch, filter="data")
        folder = Path(scratch) / "cifar10_test_jpg" / "test"
        for model in args.models.split(","):
            settings = args.cnn if model == "cnn" else args.mlp
            results[model] = train_within_budget(folder, model, settings, args)
    if "cnn" in results and "mlp" in results:
        points = 100 * (results["cnn"]["test_accuracy"] - results["mlp"]["test_accuracy"])
        results["cnn_minus_mlp_points"] = round(points, 1)
    results["goals"] = goal_checks(results)
    results["goals_met"] = all(check["pass"] for check in results["goals"].values())
    results["cpu_count"] = os.cpu_count()
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results) if args.json else json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
