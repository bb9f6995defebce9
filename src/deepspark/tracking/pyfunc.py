"""The MLflow pyfunc flavor of a deepspark model: raw columns in, typed prediction columns out."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from deepspark.data.image_inputs import IMAGE_COLUMN, PATH_COLUMN
from deepspark.data.schema import label_type
from deepspark.models.inference import ERROR_COLUMN, probability_column
from deepspark.tracking.model import DeepsparkModel

ARTIFACT_KEY = "deepspark"


class DeepsparkPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the Keras model once per process; ``predict`` takes raw columns by name.

    The ``pd.DataFrame`` hint tells MLflow not to infer a schema from type hints: the logged
    column signature and deepspark's own column checks do the validation.
    """

    def load_context(self, context):
        self.model = DeepsparkModel.from_directory(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.model.predict(model_input)


def model_signature(model: DeepsparkModel):
    """Column signature: one ColSpec per raw feature in, prediction column(s) out. An image
    model takes ``image`` (encoded bytes) or ``path`` (files), and also returns ``error``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    schema = model.schema
    if schema.image is not None:
        names = dict.fromkeys([IMAGE_COLUMN, PATH_COLUMN, *schema.feature_names])
        inputs = [
            ColSpec("string" if name == PATH_COLUMN else "binary", name, required=False)
            for name in names
        ]
    else:
        inputs = [
            ColSpec("double" if spec.kind == "numeric" else "string", spec.name, required=True)
            for spec in schema.features
        ]
    outputs = [
        ColSpec(label_type(schema.class_labels), "prediction", required=schema.image is None)
    ]
    outputs += [ColSpec("double", probability_column(label)) for label in schema.class_labels]
    if schema.image is not None:
        outputs.append(ColSpec("string", ERROR_COLUMN, required=False))
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def _framework_requirements(versions: dict[str, str]) -> list[str]:
    """The framework of the backend that trained the model (the artifact loads on either)."""
    if versions["keras_backend"] == "torch":
        return [f"torch=={versions['torch'].split('+')[0]}"]
    return [f"jax=={versions['jax']}", f"jaxlib=={versions['jaxlib']}"]


def log_pyfunc_model(
    model: DeepsparkModel, input_example: pd.DataFrame | None, *, name: str = "model"
):
    """Log ``model`` to the active MLflow run as a pyfunc model.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri`` loads it anywhere).
    """
    from deepspark.tracking.model import library_versions

    versions = library_versions()
    requirements = [
        f"keras=={versions['keras']}",
        *_framework_requirements(versions),
        "pandas",
        "pyarrow",
        "scikit-learn",
        f"mlflow=={versions['mlflow']}",
    ]
    if model.kind == "image":
        requirements.append("pillow")
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        # Image models log no example (it would be local paths or raw bytes); say so once here
        # instead of MLflow's warning.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        model_dir = model.save(Path(scratch) / ARTIFACT_KEY)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("_pyfunc_entry.py")),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            signature=model_signature(model),
            input_example=input_example,
            pip_requirements=requirements,
        )
