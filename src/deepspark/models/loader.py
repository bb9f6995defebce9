"""The one place a ``.keras`` file becomes a model: every caller (model artifacts, checkpoints,
distributed workers) loads through ``load_keras_model``."""

from __future__ import annotations

import tempfile
from pathlib import Path


def load_keras_model(source: str | Path | bytes, *, compile: bool = True, trust_code: bool = False):
    """Load a Keras model saved by deepspark.

    Args:
        source: A ``.keras`` file, or the bytes of one.
        compile: Restore the optimizer, loss and metrics too (checkpoints need them; scoring
            does not).
        trust_code: Allow Python code stored in the file (Lambda layers and the like) to run.
            Only for files from a source you trust; deepspark's own models never need it.

    Returns:
        The Keras model, on the backend Keras runs on (artifacts are backend-neutral).
    """
    import deepspark.models.preprocessing  # noqa: F401  registers deepspark's layers and losses
    import deepspark.models.tabular_layers  # noqa: F401  registers tabular_net's layers
    from deepspark._backend import import_keras

    keras = import_keras()
    if isinstance(source, bytes):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            path.write_bytes(source)
            return keras.saving.load_model(path, compile=compile, safe_mode=not trust_code)
    return keras.saving.load_model(source, compile=compile, safe_mode=not trust_code)
