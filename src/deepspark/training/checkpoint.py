"""Per-epoch checkpoints that survive SIGKILL: files are complete before ``state.json`` names them.

Layout of a run's checkpoint folder::

    run.json            config, schema, data fingerprint (written once)
    epoch-0007.keras    model with optimizer state after epoch 7 (only the latest is kept)
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
RUN_FILE = "run.json"
BEST_WEIGHTS_FILE = "best.weights.npz"


def default_checkpoint_root() -> Path:
    """``$DEEPSPARK_CHECKPOINT_DIR`` or ``./.deepspark/checkpoints``."""
    return Path(os.environ.get("DEEPSPARK_CHECKPOINT_DIR", ".deepspark/checkpoints"))


class CheckpointStore:
    """Reads and writes the checkpoint folder of one run."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def write_run_info(self, document: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.directory / RUN_FILE, document)

    def read_run_info(self) -> dict[str, Any]:
        return json.loads((self.directory / RUN_FILE).read_text())

    def read_state(self) -> dict[str, Any] | None:
        path = self.directory / STATE_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def save_epoch(self, model, epoch: int, state: dict[str, Any], best_weights=None) -> None:
        """Save the model after ``epoch`` (0-based), then point ``state.json`` at it."""
        model_file = f"epoch-{epoch:04d}.keras"
        with atomic_path(self.directory / model_file, durable=True) as temporary:
            model.save(temporary)
        if best_weights is not None:
            with atomic_path(self.directory / BEST_WEIGHTS_FILE, durable=True) as temporary:
                np.savez(temporary, *best_weights)
        previous = self.read_state()
        write_json_atomic(
            self.directory / STATE_FILE, {**state, "epoch": epoch, "model_file": model_file}
        )
        if previous and previous.get("model_file") not in (None, model_file):
            (self.directory / previous["model_file"]).unlink(missing_ok=True)

    def load_model(self, state: dict[str, Any]):
        """Load the checkpointed model with its optimizer state (compiled)."""
        from deepspark.models.loader import load_keras_model

        return load_keras_model(self.directory / state["model_file"])

    def load_best_weights(self) -> list[np.ndarray] | None:
        path = self.directory / BEST_WEIGHTS_FILE
        if not path.exists():
            return None
        with np.load(path) as archive:
            return [archive[f"arr_{index}"] for index in range(len(archive.files))]
