"""deepspark: scalable deep learning on Apache Spark with Keras 3, MLflow and Horovod-style
distributed training.

Common case::

    import deepspark
    result = deepspark.train("houses.csv", "median_house_value")
    model = deepspark.load_model(result.model_uri)
    model.predict(frame)

``import deepspark`` is light: Keras, JAX, torch, MLflow and Spark load when first used. Keras
runs on JAX unless ``KERAS_BACKEND`` says otherwise.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from deepspark._backend import configure_backend
from deepspark._lazy import lazy_attributes

configure_backend()
# MLflow draws a progress bar for every artifact download (each model load); deepspark's output
# stays readable unless the user asks for them (the CLI's --verbose, or this variable).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__version__ = "0.1.0"
__all__ = [
    "TrainConfig",
    "TrainResult",
    "TuneResult",
    "__version__",
    "classify",
    "explain",
    "featurize",
    "find_learning_rate",
    "fine_tune",
    "list_models",
    "list_runs",
    "load_checkpoint",
    "load_model",
    "log_pretrained",
    "predict",
    "register_model",
    "train",
    "tune",
    "visualize",
]

if TYPE_CHECKING:
    from deepspark.config import TrainConfig
    from deepspark.explain.api import explain
    from deepspark.tracking.model import load_model
    from deepspark.tracking.predict import predict
    from deepspark.tracking.registry import list_models, register_model
    from deepspark.tracking.runs import list_runs
    from deepspark.training.checkpoint import load_checkpoint
    from deepspark.workflows.classify import classify
    from deepspark.workflows.featurize import featurize
    from deepspark.workflows.fine_tune import fine_tune
    from deepspark.workflows.lr_find import find_learning_rate
    from deepspark.workflows.pretrained import log_pretrained
    from deepspark.workflows.train import TrainResult, train
    from deepspark.workflows.tune import TuneResult, tune
    from deepspark.workflows.visualize import visualize

_LAZY = {
    "TrainConfig": "deepspark.config",
    "TrainResult": "deepspark.workflows.train",
    "train": "deepspark.workflows.train",
    "load_model": "deepspark.tracking.model",
    "load_checkpoint": "deepspark.training.checkpoint",
    "predict": "deepspark.tracking.predict",
    "list_runs": "deepspark.tracking.runs",
    "register_model": "deepspark.tracking.registry",
    "list_models": "deepspark.tracking.registry",
    "explain": "deepspark.explain",
    "visualize": "deepspark.workflows.visualize",
    "fine_tune": "deepspark.workflows.fine_tune",
    "classify": "deepspark.workflows.classify",
    "featurize": "deepspark.workflows.featurize",
    "log_pretrained": "deepspark.workflows.pretrained",
    "tune": "deepspark.workflows.tune",
    "TuneResult": "deepspark.workflows.tune",
    "find_learning_rate": "deepspark.workflows.lr_find",
}


__getattr__ = lazy_attributes(__name__, _LAZY)
