"""Training throughput of deepspark's Keras fit vs an equivalent raw PyTorch loop.

Same MLP (the preprocessing done by the same ops, the same hidden layers), same data, same batch
size, same optimizer. Figures, measured in one run, best of ``--repeats`` per contender:

- ``samples_per_s_raw_torch``: a hand-written torch loop (zero_grad / forward / loss / backward /
  step) over a ``torch.nn`` module.
- ``samples_per_s_keras_fit``: ``model.fit`` on deepspark's compiled Keras model, no callbacks.
- ``samples_per_s_deepspark``: deepspark's whole fit (metrics, early stopping, LR schedule,
  per-epoch checkpoints and MLflow logging).
- ``ratio_vs_raw_torch`` = deepspark / raw torch (goal >= 0.9), and the Keras-only ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "california_housing.csv"


def prepared_data(path: str, batch_size: int, epochs: int, hidden: tuple[int, ...]):
    from deepspark.config import TrainConfig
    from deepspark.training.prepare import prepare_data

    config = TrainConfig(
        data=path,
        target="median_house_value",
        batch_size=batch_size,
        epochs=epochs,
        hidden=hidden,
        patience=10_000,
        reduce_lr=True,
    )
    return prepare_data(config)


def torch_module(prepared, hidden):
    """The same network in plain torch.nn, initialised from the same preprocessing statistics."""
    import torch
    from torch import nn

    from deepspark.models.preprocessing import fit_numeric_stats

    stats = fit_numeric_stats(prepared.numeric_train)
    levels = [len(spec.vocabulary) + 2 for spec in prepared.schema.categorical_specs]

    class TorchMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(stats.mean, dtype=torch.float32))
            self.register_buffer("scale", torch.tensor(stats.scale, dtype=torch.float32))
            mask = torch.zeros(len(stats.mean), dtype=torch.bool)
            mask[list(stats.log_columns)] = True
            self.register_buffer("log_mask", mask)
            self.missing = list(stats.missing_columns)
            width = len(stats.mean) + len(self.missing) + sum(levels)
            layers = []
            for units in hidden:
                layers += [nn.Linear(width, units), nn.ReLU()]
                width = units
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)

        def forward(self, numeric, categorical):
            missing = torch.isnan(numeric)
            values = torch.where(missing, torch.zeros_like(numeric), numeric)
            values = torch.where(self.log_mask, torch.log1p(values.clamp_min(0)), values)
            standardized = torch.where(missing, 0.0, (values - self.mean) / self.scale)
            parts = [standardized, missing[:, self.missing].float()]
            parts += [
                nn.functional.one_hot(categorical[:, i].long(), n).float()
                for i, n in enumerate(levels)
            ]
            return self.net(torch.cat(parts, dim=1))

    return TorchMLP()


def time_raw_torch(prepared, hidden, batch_size, epochs) -> float:
    import torch

    torch.manual_seed(0)
    model = torch_module(prepared, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    numeric = torch.from_numpy(prepared.inputs["train"]["numeric"])
    categorical = torch.from_numpy(prepared.inputs["train"]["categorical"])
    target = torch.from_numpy(prepared.targets["train"])
    standardized = (target - prepared.target_center) / prepared.target_scale
    rows = len(target)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(rows)
        for start in range(0, rows, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(
                model(numeric[index], categorical[index]), standardized[index]
            )
            loss.backward()
            optimizer.step()
    return rows * epochs / (time.perf_counter() - started)


def time_keras_fit(prepared, batch_size, epochs) -> float:
    from deepspark.training.fit import build_compiled_model

    model = build_compiled_model(prepared)
    rows = len(prepared.targets["train"])
    started = time.perf_counter()
    model.fit(
        prepared.inputs["train"],
        prepared.targets["train"],
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
    )
    return rows * epochs / (time.perf_counter() - started)


def time_deepspark_fit(prepared, epochs) -> float:
    import mlflow

    from deepspark.training.checkpoint import CheckpointStore
    from deepspark.training.fit import fit_model

    rows = len(prepared.targets["train"])
    with tempfile.TemporaryDirectory() as scratch:
        mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
        with mlflow.start_run():
            store = CheckpointStore(Path(scratch) / "checkpoints")
            store.write_run_info({})
            started = time.perf_counter()
            fit_model(prepared, store)
            seconds = time.perf_counter() - started
    # fit_model also evaluates the validation split each epoch; count training rows only.
    return rows * epochs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--batch-size", type=int, default=64)  # deepspark default
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", default="256,128,64")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    hidden = tuple(int(part) for part in args.hidden.split(","))
    prepared = prepared_data(args.data, args.batch_size, args.epochs, hidden)
    time_raw_torch(prepared, hidden, args.batch_size, 1)  # warm-up
    time_keras_fit(prepared, args.batch_size, 1)
    figures = {"raw": [], "keras": [], "deepspark": []}
    for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits all three
        figures["raw"].append(time_raw_torch(prepared, hidden, args.batch_size, args.epochs))
        figures["keras"].append(time_keras_fit(prepared, args.batch_size, args.epochs))
        figures["deepspark"].append(time_deepspark_fit(prepared, args.epochs))
    best = {name: max(values) for name, values in figures.items()}
    import torch

    result = {
        "benchmark": "fit_overhead",
        "rows": len(prepared.targets["train"]),
        "batch_size": args.batch_size,
        "hidden": list(hidden),
        "epochs_per_measure": args.epochs,
        "torch_threads": torch.get_num_threads(),
        "samples_per_s_raw_torch": round(best["raw"]),
        "samples_per_s_keras_fit": round(best["keras"]),
        "samples_per_s_deepspark": round(best["deepspark"]),
        "ratio_keras_fit_vs_raw_torch": round(best["keras"] / best["raw"], 3),
        "ratio_vs_raw_torch": round(best["deepspark"] / best["raw"], 3),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    np.random.seed(0)
    main()
