"""The MLflow pyfunc flavor of a deepspark model: raw columns in, typed prediction columns out."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

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
    """Column signature from the model's kind: one ColSpec per raw input column (an image
    model: ``image`` bytes or ``path``), the prediction column(s) out (an image model's
    ``error`` too)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    kind, schema = model.model_kind, model.schema

    def specs(columns):
        return Schema([ColSpec(c.type, c.name, required=c.required) for c in columns])

    return ModelSignature(
        inputs=specs(kind.input_columns(schema)), outputs=specs(kind.output_columns(schema))
    )


BUNDLE_DIR = "deepspark_bundle"  # the model's code/ folder holds deepspark under this name
# What loading and scoring a deepspark model imports, besides the Keras backend's framework.
_SCORING_PACKAGES = ("numpy", "pandas", "pyarrow", "rich")


#: Where PyTorch publishes its builds by local label (``2.13.0+cpu``: ``.../whl/cpu``).
TORCH_INDEX = "https://download.pytorch.org/whl/"


def _framework_requirements(versions: dict[str, str]) -> list[str]:
    """The framework of the backend that trained the model (the artifact loads on either).

    A torch build with a local label (``+cpu``, ``+cu126``) comes from PyTorch's own index for
    that label, named in the requirements, so the environment MLflow builds for serving gets
    the same build; PyPI's ``torch`` alone is the multi-GB CUDA build on Linux."""
    if versions["keras_backend"] == "torch":
        release, _, label = versions["torch"].partition("+")
        index = [f"--extra-index-url {TORCH_INDEX}{label}"] if label else []
        return [*index, f"torch=={release}"]
    return [f"jax=={versions['jax']}", f"jaxlib=={versions['jaxlib']}"]


def model_requirements(model: DeepsparkModel) -> list[str]:
    """Pinned requirements of an environment that loads and scores ``model`` with no
    deepspark installed (the artifact carries deepspark's own code)."""
    from importlib.metadata import PackageNotFoundError, version

    from deepspark.tracking.model import library_versions

    versions = library_versions()
    pinned = []
    for package in (*_SCORING_PACKAGES, *model.model_kind.requirements):
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pinned.append(package)
    return [
        f"keras=={versions['keras']}",
        *_framework_requirements(versions),
        f"mlflow=={versions['mlflow']}",
        *pinned,
    ]


def _bundled_code(scratch: Path) -> Path:
    """A copy of the deepspark package (no caches) under ``BUNDLE_DIR``, for ``code_paths``:
    MLflow puts it on ``sys.path`` as ``code/``, where ``deepspark`` itself does not shadow an
    installed deepspark (the entry file appends the bundle only when none is installed)."""
    import shutil

    import deepspark

    bundle = scratch / BUNDLE_DIR
    shutil.copytree(
        Path(deepspark.__file__).parent,
        bundle / "deepspark",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return bundle


def log_pyfunc_model(
    model: DeepsparkModel, input_example: pd.DataFrame | None, *, name: str = "model"
):
    """Log ``model`` to the active MLflow run as a pyfunc model that serves anywhere: it
    carries deepspark's code and pinned requirements, so MLflow can build its environment.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri`` loads it anywhere).
    """
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
            pip_requirements=model_requirements(model),
            code_paths=[str(_bundled_code(Path(scratch)))],
        )
