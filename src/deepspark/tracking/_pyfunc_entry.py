"""MLflow "models from code" entry: MLflow runs this file to build the pyfunc model, so no
pickled Python object is stored with the model.

An installed deepspark wins; in an environment MLflow built from the artifact alone
(``mlflow models serve --env-manager virtualenv|uv``, ``mlflow models build-docker``), the copy
of deepspark logged with the model (its ``code/`` folder, see ``tracking.pyfunc``) is used.
"""

import importlib.util
import os
import sys
from pathlib import Path

import mlflow

try:
    import deepspark  # noqa: F401
except ImportError:
    sys.path.append(str(Path(__file__).with_name("code") / "deepspark_bundle"))
    # Such an environment holds only the framework of the backend that trained the model. A
    # KERAS_BACKEND inherited from the shell (or deepspark's start-up hook) of the process that
    # started the server may name the other one; the model loads on either, so deepspark picks
    # the installed one instead of failing.
    backend = os.environ.get("KERAS_BACKEND")
    if backend in ("jax", "torch") and importlib.util.find_spec(backend) is None:
        del os.environ["KERAS_BACKEND"]

from deepspark.tracking.pyfunc import DeepsparkPyfunc  # noqa: E402

mlflow.models.set_model(DeepsparkPyfunc())
