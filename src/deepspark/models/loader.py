"""The one place a ``.keras`` file becomes a model: every caller (model artifacts, checkpoints,
distributed workers, the server) loads through ``load_keras_model``.

A model file runs no code of its own unless the user trusts it: Keras loads with
``safe_mode=True`` (no Python lambdas, no classes outside Keras and deepspark's registered ones),
and deepspark never unpickles anything from an artifact. ``DEEPSPARK_TRUST_MODEL_CODE=1`` (or
``trust_code=True``) is the opt-in for a file from a source the user trusts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from deepspark.errors import UntrustedModelError

#: Set to 1 to let model files run the Python code they hold (Lambda layers and the like).
TRUST_VARIABLE = "DEEPSPARK_TRUST_MODEL_CODE"


def trusts_model_code() -> bool:
    """Whether the user opted in to model files that hold Python code."""
    return os.environ.get(TRUST_VARIABLE, "").strip().lower() in {"1", "true", "yes"}


def load_keras_model(
    source: str | Path | bytes, *, compile: bool = True, trust_code: bool | None = None
):
    """Load a Keras model saved by deepspark.

    Args:
        source: A ``.keras`` file, or the bytes of one.
        compile: Restore the optimizer, loss and metrics too (checkpoints need them; scoring
            does not).
        trust_code: Allow Python code stored in the file (Lambda layers and the like) to run.
            Only for files from a source you trust; deepspark's own models never need it.
            Default: ``$DEEPSPARK_TRUST_MODEL_CODE``.

    Returns:
        The Keras model, on the backend Keras runs on (artifacts are backend-neutral).

    Raises:
        UntrustedModelError: The file holds code (or names classes) that a safe load refuses.
    """
    import deepspark.models.preprocessing  # noqa: F401  registers deepspark's layers and losses
    import deepspark.models.tabular_layers  # noqa: F401  registers tabular_net's layers
    from deepspark._backend import import_keras

    keras = import_keras()
    safe = not (trusts_model_code() if trust_code is None else trust_code)
    if isinstance(source, bytes):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            path.write_bytes(source)
            return _load(keras, path, compile=compile, safe=safe, name="the model")
    return _load(keras, source, compile=compile, safe=safe, name=str(source))


def _load(keras, path, *, compile: bool, safe: bool, name: str):
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=safe)
    except (ValueError, TypeError) as error:
        text = " ".join(str(error).split())
        if safe and ("safe_mode" in text or "unsafe_deserialization" in text):
            raise UntrustedModelError(
                f"The model file holds Python code (a Lambda layer or similar) that deepspark "
                f"does not run unless you trust the file's source; if you do, set "
                f"{TRUST_VARIABLE}=1 (Python: trust_code=True). Received: model={name!r}"
            ) from None
        if safe and "could not be deserialized" in text:
            raise UntrustedModelError(
                f"The model file names classes that neither Keras nor deepspark registers, so "
                f"it cannot be loaded safely; import the module that registers them "
                f"(keras.saving.register_keras_serializable) or, if you trust the file's "
                f"source, set {TRUST_VARIABLE}=1. Received: model={name!r}"
            ) from None
        raise
