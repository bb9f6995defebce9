"""Keras runs on the torch backend in deepspark; this module makes sure of it before Keras loads."""

from __future__ import annotations

import os
import sys

from deepspark.errors import BackendError

BACKEND = "torch"


def configure_backend() -> None:
    """Select the torch backend for Keras unless the user already chose one.

    Called at ``import deepspark``; cheap, imports nothing.
    """
    os.environ.setdefault("KERAS_BACKEND", BACKEND)


def import_keras():
    """Import Keras and check it runs on torch.

    Returns:
        The ``keras`` module.

    Raises:
        BackendError: When Keras was configured (or already imported) with another backend.
    """
    configure_backend()
    import keras

    backend = keras.backend.backend()
    if backend != BACKEND:
        loaded = "keras" in sys.modules
        raise BackendError(
            f"deepspark needs the Keras torch backend, but Keras runs on '{backend}'"
            f"{' (Keras was imported before deepspark)' if loaded else ''}; "
            f"set KERAS_BACKEND=torch before importing Keras. Received: KERAS_BACKEND={backend}"
        )
    return keras
