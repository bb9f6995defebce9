"""Per-epoch checkpoints that survive SIGKILL: files are complete before ``state.json`` names them.

Layout of a run's checkpoint folder::

    run.json            config, schema, data fingerprint (written once)
    model.keras         the compiled model (architecture, optimizer settings; written once)
    epoch-0007.npz      values of the model's and optimizer's variables after epoch 7 (only the
                        latest is kept)
    best.weights.npz    weights of the best validation epoch (early stopping restores them)
    state.json          last completed epoch, callback state, history (replaced atomically)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from deepspark._atomic import atomic_path, write_json_atomic

STATE_FILE = "state.json"
MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
BEST_WEIGHTS_FILE = "best.weights.npz"


def default_checkpoint_root() -> Path:
    """``$DEEPSPARK_CHECKPOINT_DIR`` or ``./.deepspark/checkpoints``."""
    return Path(os.environ.get("DEEPSPARK_CHECKPOINT_DIR", ".deepspark/checkpoints"))


class CheckpointStore:
    """Reads and writes the checkpoint folder of one run."""

    def __init__(self, directory: str | Path, *, model_file: str = MODEL_FILE):
        self.directory = Path(directory)
        # A training phase that changes the model's compiled form (transfer learning's
        # fine-tuning: other trainable layers, a new optimizer) saves it under its own name.
        self.model_file = model_file

    def write_run_info(self, document: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.directory / RUN_FILE, document)

    def read_run_info(self) -> dict[str, Any]:
        return json.loads((self.directory / RUN_FILE).read_text())

    def read_state(self) -> dict[str, Any] | None:
        path = self.directory / STATE_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def save_epoch(self, model, epoch: int, state: dict[str, Any], best_weights=None) -> None:
        """Save the model after ``epoch`` (0-based), then point ``state.json`` at it.

        The ``.keras`` file (architecture, compile settings) is written once; each epoch writes
        only the values of the model's and the optimizer's variables, a few milliseconds
        instead of a whole model file per epoch.
        """
        if not (self.directory / self.model_file).exists():
            with atomic_path(self.directory / self.model_file, durable=True) as temporary:
                model.save(temporary)
        variables_file = f"epoch-{epoch:04d}.npz"
        with atomic_path(self.directory / variables_file, durable=True) as temporary:
            np.savez(temporary, *_variable_values(model))
        if best_weights is not None:
            with atomic_path(self.directory / BEST_WEIGHTS_FILE, durable=True) as temporary:
                np.savez(temporary, *best_weights)
        previous = self.read_state()
        document = {**state, "epoch": epoch, "model_file": self.model_file}
        write_json_atomic(
            self.directory / STATE_FILE, {**document, "variables_file": variables_file}
        )
        stale = previous.get("variables_file") if previous else None
        if stale not in (None, variables_file):
            (self.directory / stale).unlink(missing_ok=True)

    def load_model(self, state: dict[str, Any]):
        """Load the checkpointed model with its optimizer state (compiled)."""
        from deepspark.models.loader import load_keras_model

        model = load_keras_model(self.directory / state["model_file"])
        if state.get("variables_file"):
            with np.load(self.directory / state["variables_file"]) as archive:
                values = [archive[f"arr_{index}"] for index in range(len(archive.files))]
            _assign_variable_values(model, values)
        return model

    def load_best_weights(self) -> list[np.ndarray] | None:
        path = self.directory / BEST_WEIGHTS_FILE
        if not path.exists():
            return None
        with np.load(path) as archive:
            return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def _variables(model) -> list:
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return [*model.variables, *(optimizer.variables if optimizer is not None else ())]


def _variable_values(model) -> list[np.ndarray]:
    from keras import ops

    return [ops.convert_to_numpy(variable.value) for variable in _variables(model)]


def _assign_variable_values(model, values: list[np.ndarray]) -> None:
    variables = _variables(model)
    if len(variables) != len(values):
        raise ValueError(
            f"The checkpoint holds {len(values)} variables but its model has {len(variables)}; "
            "the checkpoint folder is damaged or mixed with another run's."
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
