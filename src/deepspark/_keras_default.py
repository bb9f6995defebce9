"""Which Keras backend a process gets when the user has not chosen, and the start-up hook that
lets ``import keras`` come before ``import deepspark``.

Keras picks its backend once, at its first import: ``KERAS_BACKEND``, else the ``backend`` of
``$KERAS_HOME/keras.json`` (``~/.keras/keras.json``), else TensorFlow. deepspark's environments
have no TensorFlow, so a notebook that starts with ``import keras`` fails before deepspark can set
the variable. ``make setup`` therefore installs this file into the environment's site-packages
as ``_deepspark_keras_default.py`` with a ``.pth`` line that runs ``apply()`` at interpreter
start-up: it sets ``KERAS_BACKEND`` only when nothing else chose a usable backend.

This module must stay standard-library only and import nothing from deepspark: the hook runs in
every Python process of the environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

ENV = "KERAS_BACKEND"
SUPPORTED = ("jax", "torch")
HOOK_MODULE = "_deepspark_keras_default"
PTH_NAME = "deepspark-keras-backend.pth"


def keras_config_backend() -> str | None:
    """The backend named in Keras' own config file, or ``None`` without a readable one."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as handle:
            backend = json.load(handle).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return backend if isinstance(backend, str) else None


def default_backend() -> str:
    """The backend for a process whose user set no ``KERAS_BACKEND``.

    A supported backend named in ``keras.json`` wins; otherwise the first of JAX and torch that is
    installed (JAX when neither is, so the error names the default).
    """
    configured = keras_config_backend()
    if configured in SUPPORTED:
        return configured
    for name in SUPPORTED:
        if importlib.util.find_spec(name) is not None:
            return name
    return SUPPORTED[0]


def apply() -> None:
    """The start-up hook: choose a backend unless the user did or TensorFlow is there to use."""
    if ENV in os.environ:
        return
    configured = keras_config_backend()
    if configured in SUPPORTED:
        return  # Keras reads the user's file itself
    if configured not in (None, "tensorflow") or importlib.util.find_spec("tensorflow"):
        return  # another backend the user installed and chose
    os.environ[ENV] = default_backend()


def install(site_packages: str | Path | None = None) -> Path:
    """Install the hook into ``site_packages`` (this interpreter's purelib by default).

    Returns:
        The path of the ``.pth`` file written.
    """
    import sysconfig

    target = Path(site_packages or sysconfig.get_paths()["purelib"])
    shutil.copyfile(__file__, target / f"{HOOK_MODULE}.py")
    pth = target / PTH_NAME
    pth.write_text(f"import {HOOK_MODULE}; {HOOK_MODULE}.apply()\n", encoding="utf-8")
    return pth
