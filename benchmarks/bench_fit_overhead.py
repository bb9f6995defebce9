"""Training throughput of deepspark's Keras fit vs an equivalent raw PyTorch loop, per backend.

Same MLP (the preprocessing done by the same ops, the same hidden layers), same data, same batch
size, same optimizer. Keras picks its backend once per process, so each Keras backend (``jax``,
``torch``) is measured in its own child process (``KERAS_BACKEND`` set in its environment), and
the raw torch loop runs again in every child: each ratio is measured within one process, one run.
Figures per backend and batch size, best of ``--repeats`` per contender (interleaved):

- ``samples_per_s_raw_torch``: a hand-written torch loop (zero_grad / forward / loss / backward /
  step) over a ``torch.nn`` module; its fastest epoch (it has nothing to compile).
- ``samples_per_s_keras_fit``: ``model.fit`` on deepspark's compiled Keras model, no callbacks
  (a fresh model each time, so JIT compilation on JAX is included, as a user pays it).
- ``samples_per_s_keras_fit_steady``: the same fit's fastest epoch after the first (no compile).
- ``samples_per_s_deepspark``: deepspark's whole fit, ``deepspark.training.fit.fit_model``
  (metrics, validation, early stopping, LR schedule, per-epoch checkpoints, MLflow logging);
  training rows only are counted. ``samples_per_s_deepspark_steady``: its fastest epoch after the
  first (validation and per-epoch callbacks included, compilation not);
  ``deepspark_first_epoch_seconds``: its first epoch (model set-up and, on JAX, compilation).
- ``ratio_vs_raw_torch`` = deepspark / raw torch, and the Keras-only ratios.

Epochs per measure differ by backend (``DEFAULT_EPOCHS``; ``--epochs`` sets one for all): the
whole-fit figures include JAX's compilation, so they depend on the epoch count; the ``_steady``
ones do not.

Goals (issue 9, this 2-core machine): on JAX, ``ratio_vs_raw_torch`` (the whole ``fit_model``)
>= 1.5 at batch 64 and >= 1.0 at batch 1024; ``goals`` prints each with its pass flag. A child
that runs past ``--timeout`` keeps the batch sizes it finished.
Usage: ``python benchmarks/bench_fit_overhead.py --json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "california_housing.csv"
BACKENDS = ("jax", "torch")
# Epochs per measurement, per backend and batch size: a batch of 1024 takes ~14 steps an epoch,
# so it needs more epochs; Keras on torch compiles nothing but is slow at batch 64, so it gets
# fewer (the whole run stays within a few minutes on 2 busy cores).
DEFAULT_EPOCHS = {"jax": {64: 4, 1024: 12}, "torch": {64: 2, 1024: 6}}
GOALS = {"jax": {64: 1.5, 1024: 1.0}}


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


def time_raw_torch(
    prepared, hidden, batch_size, epochs, *, device: str | None = None, warmup_epochs: int = 0
) -> float:
    """Samples/s of a hand-written torch loop over the same MLP, data on ``device`` (default
    CPU); the first ``warmup_epochs`` are not counted (CUDA kernels, allocator)."""
    import torch

    device = torch.device(device or "cpu")

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(0)
    model = torch_module(prepared, hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    numeric = torch.from_numpy(prepared.inputs["train"]["numeric"]).to(device)
    categorical = torch.from_numpy(prepared.inputs["train"]["categorical"]).to(device)
    target = torch.from_numpy(prepared.targets["train"]).to(device)
    standardized = (target - prepared.target_center) / prepared.target_scale
    rows = len(target)
    durations = []
    for _ in range(epochs + warmup_epochs):
        synchronize()
        started = time.perf_counter()
        order = torch.randperm(rows, device=device)
        for start in range(0, rows, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(
                model(numeric[index], categorical[index]), standardized[index]
            )
            loss.backward()
            optimizer.step()
        synchronize()
        durations.append(time.perf_counter() - started)
    # The loop has nothing to compile or set up: its fastest epoch is its throughput, and the
    # least disturbed by other processes on a shared machine.
    return rows / min(durations[warmup_epochs:])


def epoch_timer():
    """A Keras callback that records each epoch's wall time in ``.durations``: from one epoch's
    start to the next one's (or the end of training), so the work of every other callback at an
    epoch's end counts, wherever this one sits in the list."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        durations: list[float]
        started: float | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._mark()

        def on_train_end(self, logs=None):
            self._mark()
            self.started = None

        def _mark(self):
            now = time.perf_counter()
            if self.started is not None:
                self.durations.append(now - self.started)
            self.started = now

    timer = EpochTimer()
    timer.durations = []
    return timer


def time_keras_fit(prepared, batch_size, epochs) -> tuple[float, float]:
    """(samples/s of the whole fit, samples/s of its fastest epoch after the first)."""
    from deepspark.training.fit import build_compiled_model

    timer = epoch_timer()
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
        callbacks=[timer],
    )
    whole = rows * epochs / (time.perf_counter() - started)
    return whole, rows / min(timer.durations[1:] or timer.durations)


def time_deepspark_fit(prepared, epochs) -> tuple[float, float | None, float | None]:
    """(samples/s of the whole ``fit_model``, of its fastest epoch after the first, seconds of
    its first epoch). Epochs are timed by a callback handed to ``fit.run_fit`` through its
    ``first_callbacks`` (a wrapper for this call; nothing in deepspark changes); where
    ``run_fit`` is missing, only the whole fit is timed."""
    import mlflow

    from deepspark.training import fit as fit_module
    from deepspark.training.checkpoint import CheckpointStore

    timer = epoch_timer()
    run_fit = getattr(fit_module, "run_fit", None)

    def timed_run_fit(*args, first_callbacks=(), **kwargs):
        return run_fit(*args, first_callbacks=(*first_callbacks, timer), **kwargs)

    rows = len(prepared.targets["train"])
    with tempfile.TemporaryDirectory() as scratch:
        mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
        with mlflow.start_run():
            store = CheckpointStore(Path(scratch) / "checkpoints")
            store.write_run_info({})
            if run_fit is not None:
                fit_module.run_fit = timed_run_fit
            try:
                started = time.perf_counter()
                fit_module.fit_model(prepared, store)
                seconds = time.perf_counter() - started
            finally:
                if run_fit is not None:
                    fit_module.run_fit = run_fit
    # fit_model also evaluates the validation split each epoch; count training rows only.
    if not timer.durations:
        return rows * epochs / seconds, None, None
    steady = rows / min(timer.durations[1:] or timer.durations)
    return rows * epochs / seconds, steady, timer.durations[0]


def measure_batch(args, hidden, batch_size: int) -> dict:
    """All contenders at one batch size, in this process."""
    from deepspark._backend import backend_name

    epochs = args.epochs or DEFAULT_EPOCHS.get(backend_name(), {}).get(batch_size, 3)
    prepared = prepared_data(args.data, batch_size, epochs, hidden)
    time_raw_torch(prepared, hidden, batch_size, 1)  # warm-up
    time_keras_fit(prepared, batch_size, 1)
    names = ("raw", "keras", "keras_steady", "deepspark", "deepspark_steady", "first_epoch")
    figures = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits all three
        figures["raw"].append(time_raw_torch(prepared, hidden, batch_size, epochs))
        whole, steady = time_keras_fit(prepared, batch_size, epochs)
        figures["keras"].append(whole)
        figures["keras_steady"].append(steady)
        whole, steady, first_epoch = time_deepspark_fit(prepared, epochs)
        figures["deepspark"].append(whole)
        figures["deepspark_steady"].append(steady)
        figures["first_epoch"].append(None if first_epoch is None else -first_epoch)
    best = {name: None if None in values else max(values) for name, values in figures.items()}
    raw = best["raw"]

    def ratio(name):
        return None if best[name] is None else round(best[name] / raw, 3)

    def rate(name):
        return None if best[name] is None else round(best[name])

    return {
        "rows": len(prepared.targets["train"]),
        "epochs_per_measure": epochs,
        "samples_per_s_raw_torch": rate("raw"),
        "samples_per_s_keras_fit": rate("keras"),
        "samples_per_s_keras_fit_steady": rate("keras_steady"),
        "samples_per_s_deepspark": rate("deepspark"),
        "samples_per_s_deepspark_steady": rate("deepspark_steady"),
        "deepspark_first_epoch_seconds": (
            None if best["first_epoch"] is None else round(-best["first_epoch"], 2)
        ),
        "ratio_keras_fit_vs_raw_torch": ratio("keras"),
        "ratio_keras_fit_steady_vs_raw_torch": ratio("keras_steady"),
        "ratio_deepspark_steady_vs_raw_torch": ratio("deepspark_steady"),
        "ratio_vs_raw_torch": ratio("deepspark"),
    }


def worker(args, hidden, batch_sizes) -> None:
    """One Keras backend (this process's KERAS_BACKEND), every batch size; prints one JSON line
    per result as soon as it has it, so a parent that times out still keeps what was done."""
    np.random.seed(0)
    import torch

    from deepspark._backend import backend_name, import_keras
    from deepspark.runtime import framework_versions

    import_keras()
    header = {
        "keras_backend": backend_name(),
        "versions": {**framework_versions(), "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(header), flush=True)
    for batch_size in batch_sizes:
        figures = measure_batch(args, hidden, batch_size)
        print(json.dumps({"batch_size": batch_size, **figures}), flush=True)


def run_child(backend: str, argv: list[str], timeout: float) -> dict:
    """This script again with ``--worker-backend``, KERAS_BACKEND set; merges its JSON lines."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    started = time.perf_counter()
    error = None
    try:
        done = subprocess.run(
            [sys.executable, __file__, *argv, "--worker-backend", backend],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        stdout = done.stdout
        if done.returncode != 0:
            error = f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout or ""
        stdout = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
        error = f"timed out after {timeout:.0f} s"
    result = {"batches": {}}
    for line in stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "batch_size" in record:
                result["batches"][str(record.pop("batch_size"))] = record
            else:
                result.update(record)
    if error:
        result["error"] = error
    result["child_seconds"] = round(time.perf_counter() - started, 1)
    return result


def goal_checks(per_backend: dict) -> dict:
    checks = {}
    for backend, goals in GOALS.items():
        batches = per_backend.get(backend, {}).get("batches", {})
        for batch_size, goal in goals.items():
            ratio = batches.get(str(batch_size), {}).get("ratio_vs_raw_torch")
            checks[f"{backend}_batch_{batch_size}"] = {
                "goal_ratio_vs_raw_torch": goal,
                "ratio_vs_raw_torch": ratio,
                "ratio_deepspark_steady_vs_raw_torch": batches.get(str(batch_size), {}).get(
                    "ratio_deepspark_steady_vs_raw_torch"
                ),
                "pass": ratio is not None and ratio >= goal,
            }
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch-sizes", default="64,1024")
    parser.add_argument("--epochs", type=int, help="epochs per measure (default: DEFAULT_EPOCHS)")
    parser.add_argument("--hidden", default="256,128,64")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per backend")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker-backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    hidden = tuple(int(part) for part in args.hidden.split(","))
    batch_sizes = [int(part) for part in args.batch_sizes.split(",")]
    if args.worker_backend:
        worker(args, hidden, batch_sizes)
        return
    argv = [
        f"--data={args.data}",
        f"--batch-sizes={args.batch_sizes}",
        f"--hidden={args.hidden}",
        f"--repeats={args.repeats}",
        *([f"--epochs={args.epochs}"] if args.epochs else []),
    ]
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    per_backend = {
        backend: run_child(backend, argv, args.timeout) for backend in args.backends.split(",")
    }
    checks = goal_checks(per_backend)
    result = {
        "benchmark": "fit_overhead",
        "hidden": list(hidden),
        "repeats": args.repeats,
        "backends": per_backend,
        **closing_figures(checks, started, load_at_start),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


def closing_figures(checks: dict, started: float, load_at_start: float) -> dict:
    """The goals and how the run went: cores, wall seconds, and other processes' load (the
    1-minute average at start and end: figures from a busy machine, load above its cores, are
    noisier and slower). Shared by the benchmarks that import this module."""
    return {
        "goals": checks,
        "goals_met": all(check["pass"] for check in checks.values()),
        "cpu_count": os.cpu_count(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
    }


if __name__ == "__main__":
    main()
