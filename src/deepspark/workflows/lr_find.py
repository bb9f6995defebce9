"""``find_learning_rate``: the learning-rate range test (``deepspark.training.lr_find``) on the data
and network ``train`` would use, with the plot written and the result tracked in MLflow.

The data is read, split and encoded as ``train`` does it and the network built and compiled as
``train`` builds it (same settings, same seed), then a copy of it trains on the training split
for ``steps`` batches while the learning rate grows from ``min_lr`` to ``max_lr``. The MLflow run
(named ``lr-find`` unless ``run_name`` is given) holds the settings as params, the metric
``suggested_lr``, the plot ``lr_find.png`` and the curve ``lr_find.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from deepspark._backend import use_backend
from deepspark.config import make_config
from deepspark.models.builders import check_model
from deepspark.training.prepare import PreparedData, prepare_data

logger = logging.getLogger("deepspark.training")
RUN_NAME = "lr-find"
PLOT_ARTIFACT = "lr_find.png"
CURVE_ARTIFACT = "lr_find.json"


def find_learning_rate(
    data: str | None = None,
    target: str | None = None,
    *,
    steps: int = 200,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    output: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
    log: bool = True,
    model: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Run the learning-rate range test for a training run's data and network.

    Args:
        data: A table path, built-in dataset name or image folder, as for ``train``.
        target: The column to predict (optional for built-in datasets and image folders).
        steps: Batches in the test (it stops sooner when the loss diverges).
        min_lr: The first learning rate.
        max_lr: The last learning rate.
        output: A PNG file for the plot; ``None``: the plot goes only to MLflow.
        tracking_uri: MLflow tracking URI; ``None`` keeps MLflow's default.
        log: Track the test as an MLflow run (``False``: no run, nothing logged).
        model: The network, as ``train``'s ``model`` (``None``: deepspark's MLP or CNN).
        **settings: Any ``TrainConfig`` field (``batch_size``, ``optimizer``, ``hidden``...);
            the optimizer, batch size and network change what the best rate is.

    Returns:
        JSON-ready: ``suggested_lr``, ``rule`` (how it was chosen; see
        ``deepspark.training.lr_find.suggest_learning_rate``), ``steps`` (run), ``stopped_early``
        (the loss diverged), ``min_lr``, ``last_lr`` (the rate reached), ``plot`` (the PNG path
        or ``None``), ``run_id`` and ``plot_uri`` (the logged plot; ``None`` without ``log``).

    Raises:
        UserInputError: Bad data or settings (the message names the problem and the fix).

    Example:
        >>> found = deepspark.find_learning_rate("houses.csv", "price", output="lr.png")
        >>> deepspark.train("houses.csv", "price", lr=found["suggested_lr"])
    """
    from deepspark.training.lr_find import check_range_settings

    check_range_settings(min_lr=min_lr, max_lr=max_lr, steps=steps)
    output = _check_output(output)
    config = make_config({"data": data, "target": target, "tracking_uri": tracking_uri, **settings})
    # The range test sets the rate every step: a schedule would own it.
    config = dataclasses.replace(config, lr_schedule="constant")
    check_model(model)
    use_backend(config.keras_backend)
    prepared = dataclasses.replace(prepare_data(config, model=model, stream=False), builder=model)
    test = {"steps": steps, "min_lr": min_lr, "max_lr": max_lr}
    if not log:
        result = _range_test(prepared, **test)
        plot = str(_write_plot(result, output)) if output is not None else None
        return _document(result, min_lr=min_lr, plot=plot, run_id=None)
    return _tracked_range_test(prepared, test, output)


def _tracked_range_test(
    prepared: PreparedData, test: dict[str, Any], output: Path | None
) -> dict[str, Any]:
    import mlflow

    from deepspark.tracking.run import deferred_interrupts, tracked_run

    config = prepared.config
    with tracked_run(
        experiment=config.experiment,
        run_name=config.run_name or RUN_NAME,
        tracking_uri=config.tracking_uri,
    ) as active:
        run_id = active.info.run_id
        with deferred_interrupts():
            _log_settings(prepared, test)
        result = _range_test(prepared, **test)
        with deferred_interrupts():
            plot = _log_result(result, output)
    document = _document(result, min_lr=test["min_lr"], plot=plot, run_id=run_id)
    document["plot_uri"] = f"runs:/{run_id}/{PLOT_ARTIFACT}"
    document["tracking_uri"] = mlflow.get_tracking_uri()
    return document


def _range_test(prepared: PreparedData, *, steps: int, min_lr: float, max_lr: float):
    from deepspark.data.image_inputs import ImageFiles
    from deepspark.training.callbacks import InterruptCheck
    from deepspark.training.fit import build_compiled_model
    from deepspark.training.lr_find import lr_find

    config = prepared.config
    inputs, targets = prepared.inputs["train"], prepared.targets["train"]
    if isinstance(inputs, ImageFiles):  # decoded a batch at a time, as training streams them
        from deepspark.data.image_batches import ImageBatches

        inputs = ImageBatches(
            inputs, targets, batch_size=config.batch_size, shuffle=True, seed=config.seed
        )
        targets = None
    return lr_find(
        build_compiled_model(prepared),
        inputs,
        targets,
        batch_size=config.batch_size,
        min_lr=min_lr,
        max_lr=max_lr,
        steps=steps,
        callbacks=[InterruptCheck()],
    )


def _log_settings(prepared: PreparedData, test: dict[str, Any]) -> None:
    import mlflow

    from deepspark._backend import backend_name

    schema = prepared.schema
    mlflow.log_params(prepared.config.to_params())
    mlflow.log_params(
        {
            **{f"lr_find_{name}": value for name, value in test.items()},
            "task_resolved": schema.task,
            "model": _model_param(prepared.builder),
            "rows_train": prepared.split.sizes()["train"],
        }
    )
    mlflow.set_tags(
        {
            "deepspark.purpose": RUN_NAME,
            "deepspark.task": schema.task,
            "deepspark.kind": schema.kind,
            "deepspark.keras_backend": backend_name(),
        }
    )


def _model_param(model: Any) -> str:
    """The ``model`` as given (``default``: the data kind's default network)."""
    if model is None or isinstance(model, str):
        return model or "default"
    return getattr(model, "name", None) or getattr(model, "__name__", type(model).__name__)


def _log_result(result, output: Path | None) -> str | None:
    """Log the metric, the curve and the plot; write the plot to ``output`` too if given."""
    import mlflow

    from deepspark._atomic import write_bytes_atomic

    mlflow.log_metrics(
        {
            "suggested_lr": result.suggestion,
            "lr_find_steps": len(result.rates),
            "lr_find_stopped_early": float(result.stopped_early),
        }
    )
    mlflow.log_dict(result.to_dict(), CURVE_ARTIFACT)
    with tempfile.TemporaryDirectory() as scratch:
        plot = _write_plot(result, Path(scratch, PLOT_ARTIFACT))
        mlflow.log_artifact(str(plot))
        if output is None:
            return None
        output.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(output, plot.read_bytes())
    return str(output)


def _check_output(output: str | os.PathLike[str] | None) -> Path | None:
    if output is None:
        return None
    path = Path(output).absolute()
    if path.suffix.lower() != ".png" or path.is_dir():
        from deepspark.errors import UserInputError

        raise UserInputError(
            "Invalid --output: the plot is a PNG file; give a file path ending in .png. "
            f"Received: output={str(output)!r}"
        )
    return path


def _write_plot(result, path: Path) -> Path:
    from deepspark.training.lr_find import plot_lr_find

    return plot_lr_find(result, path)


def _document(result, *, min_lr: float, plot: str | None, run_id: str | None) -> dict[str, Any]:
    return {
        "suggested_lr": result.suggestion,
        "rule": result.rule,
        "steps": len(result.rates),
        "stopped_early": result.stopped_early,
        "min_lr": min_lr,
        "last_lr": result.rates[-1],
        "plot": plot,
        "run_id": run_id,
        "plot_uri": None,
    }
