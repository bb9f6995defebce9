"""Which Keras backend deepspark runs on: ``jax`` by default, ``torch`` when the user says so.

Keras reads ``KERAS_BACKEND`` once, when it is first imported. ``import deepspark`` sets it to
``jax`` only when the user has not chosen (the environment wins); ``use_backend("torch")`` (the
CLI's ``--keras-backend``, ``deepspark.train(..., keras_backend=...)``) chooses before Keras
loads. Nothing here imports a framework.
"""

from __future__ import annotations

import os
import sys

from deepspark._keras_default import default_backend
from deepspark.errors import BackendError, MissingDependencyError, UserInputError

BACKENDS = ("jax", "torch")
DEFAULT_BACKEND = "jax"
ENV = "KERAS_BACKEND"


def configure_backend() -> None:
    """Select the default backend for Keras unless the user already chose one.

    Called at ``import deepspark``; cheap, imports nothing. A JAX or torch backend named in
    ``~/.keras/keras.json`` counts as the user's choice; otherwise JAX, or torch where JAX is not
    installed (an environment built for a torch-trained model, say).
    """
    if ENV not in os.environ:
        os.environ[ENV] = default_backend()


def backend_name() -> str:
    """The backend Keras runs on (or will run on, when it is not imported yet)."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    return os.environ.get(ENV, DEFAULT_BACKEND)


def use_backend(name: str | None) -> str:
    """Make Keras run on ``name`` (``None``: keep the current choice); returns the backend.

    Raises:
        UserInputError: An unknown name, or Keras already runs on another backend in this
            process (Keras cannot switch once imported).
    """
    if name is None:
        configure_backend()
        return backend_name()
    if name not in BACKENDS:
        raise UserInputError(
            f"Invalid --keras-backend: unknown value; valid values are {', '.join(BACKENDS)}. "
            f"Received: keras_backend={name!r}"
        )
    if "keras" in sys.modules and backend_name() != name:
        raise UserInputError(
            f"Keras already runs on '{backend_name()}' in this process and cannot switch; set "
            f"KERAS_BACKEND={name} before importing Keras or deepspark. "
            f"Received: keras_backend={name!r}"
        )
    os.environ[ENV] = name
    return name


def import_keras():
    """Import Keras and check it runs on a backend deepspark supports.

    Returns:
        The ``keras`` module.

    Raises:
        BackendError: When Keras runs on another backend (e.g. ``tensorflow``).
    """
    configure_backend()
    if "keras" not in sys.modules:
        _check_installed(os.environ[ENV])
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        from deepspark.runtime._jax import configure_compilation_cache

        configure_compilation_cache()
    if backend not in BACKENDS:
        raise BackendError(
            f"deepspark runs Keras on {' or '.join(BACKENDS)}, but Keras runs on '{backend}'; "
            f"set KERAS_BACKEND=jax (or torch) before importing Keras. "
            f"Received: KERAS_BACKEND={backend}"
        )
    return keras


def _check_installed(name: str) -> None:
    import importlib.util

    if name in BACKENDS and importlib.util.find_spec(name) is None:
        raise MissingDependencyError(
            f"Keras on the {name} backend needs the '{name}' package, which is not installed; "
            f"install it with: pip install 'deepspark[{name if name == 'torch' else 'gpu'}]', "
            f"or choose the other backend with KERAS_BACKEND. Received: KERAS_BACKEND={name}"
        )
