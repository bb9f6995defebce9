"""The deepspark model: a Keras network plus its feature schema, loaded from any model URI.

On disk (inside the MLflow pyfunc model, under ``artifacts/deepspark/``)::

    model.keras      preprocessing layers + network, loaded with safe_mode=True
    deepspark.json   task, feature schema (with vocabularies), target, class labels, versions
"""

from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path
from typing import Any

import pandas as pd

from deepspark.data.encoding import encode_features
from deepspark.data.schema import FeatureSchema
from deepspark.errors import ModelNotFoundError

KERAS_FILE = "model.keras"
METADATA_FILE = "deepspark.json"


def library_versions() -> dict[str, str]:
    """Versions the artifact records, including the Keras backend that trained it."""
    import keras
    import mlflow

    import deepspark
    from deepspark.runtime import framework_versions

    return {
        "deepspark": deepspark.__version__,
        "keras": keras.__version__,
        **framework_versions(),
        "mlflow": mlflow.__version__,
        "python": platform.python_version(),
    }


class DeepsparkModel:
    """A trained network with the schema that turns raw columns into its inputs.

    Args:
        keras_model: The Keras model (preprocessing layers included).
        schema: The feature schema it was trained with.
        metadata: Extra facts stored with the model (versions, target statistics, run id).
    """

    def __init__(self, keras_model, schema: FeatureSchema, metadata: dict[str, Any] | None = None):
        self.keras_model = keras_model
        self.schema = schema
        self.metadata = metadata or {}

    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def feature_names(self) -> list[str]:
        return self.schema.feature_names

    def predict_output(self, frame: pd.DataFrame):
        """Raw network output for the rows of ``frame`` (columns bound by name)."""
        from deepspark.models.inference import predict_arrays

        return predict_arrays(self.keras_model, encode_features(frame, self.schema))

    @property
    def kind(self) -> str:
        """``tabular`` (raw columns in) or ``image`` (image bytes or paths in)."""
        return self.schema.kind

    @property
    def model_kind(self):
        """The ``models.kinds.ModelKind`` that owns this model's inputs and outputs."""
        from deepspark.models.kinds import kind_of

        return kind_of(self.schema)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions for raw rows: ``prediction`` (+ ``probability_<label>`` per class; an
        image model adds ``error``: why a row's image could not be scored, else ``None``).

        Raises:
            UserInputError: Missing columns (named) or text in a numeric column; for an image
                model, no column of images.
        """
        return self.model_kind.predict(self.keras_model, self.schema, frame)

    def save(self, directory: str | Path) -> Path:
        """Write ``model.keras`` and ``deepspark.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.keras_model.save(directory / KERAS_FILE)
        document = {
            "schema": self.schema.to_dict(),
            "versions": library_versions(),
            **self.metadata,
        }
        (directory / METADATA_FILE).write_text(json.dumps(document, indent=1, default=str))
        return directory

    @classmethod
    def from_directory(cls, directory: str | Path) -> DeepsparkModel:
        """Load from a folder written by ``save`` (Keras ``safe_mode=True``)."""
        directory = Path(directory)
        return cls.from_files(directory / KERAS_FILE, directory / METADATA_FILE)

    @classmethod
    def from_files(cls, keras_file: str | Path, metadata_file: str | Path) -> DeepsparkModel:
        """Load from a ``.keras`` file and its ``deepspark.json`` (Keras ``safe_mode=True``)."""
        from deepspark.models.loader import load_keras_model

        document = json.loads(Path(metadata_file).read_text())
        keras_model = load_keras_model(keras_file, compile=False)
        schema = FeatureSchema.from_dict(document.pop("schema"))
        return cls(keras_model, schema, document)


def load_model(model_uri: str) -> DeepsparkModel:
    """Load a deepspark model from an MLflow URI (``models:/...``, ``runs:/...``) or a local path.

    Args:
        model_uri: Anything ``mlflow.artifacts.download_artifacts`` resolves, or a folder.

    Returns:
        The model; ``.predict(frame)`` scores raw rows.

    Raises:
        ModelNotFoundError: When the URI resolves to nothing, or to something that is not a
            deepspark model.
    """
    return DeepsparkModel.from_directory(resolve_model_dir(model_uri))


def resolve_model_dir(model_uri: str) -> Path:
    """The local folder holding ``model.keras`` and ``deepspark.json`` (downloaded if remote).

    Raises:
        ModelNotFoundError: When the URI resolves to nothing, or not to a deepspark model.
    """
    local = Path(model_uri)
    if local.exists():
        return _find_model_dir(local, model_uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    # Only the deepspark folder when the URI takes a sub-path: the whole artifact also holds
    # the bundled code (hundreds of files) that serving environments need, and scoring not.
    with contextlib.suppress(MlflowException, OSError, ValueError):
        part = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri.rstrip('/')}/artifacts/deepspark"
        )
        if (Path(part) / METADATA_FILE).exists():
            return Path(part)
    try:
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except (MlflowException, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ModelNotFoundError(
            f"Model not found ({first_line}); check the URI (models:/<id>, runs:/<run_id>/model, "
            f"models:/NAME@alias, models:/NAME/<version> (`deepspark models` lists them) or a "
            f"local folder) and --tracking-uri. Received: model={model_uri!r}"
        ) from error
    return _find_model_dir(downloaded, model_uri)


def _find_model_dir(root: Path, model_uri: str) -> Path:
    for candidate in (root, root / "artifacts" / "deepspark"):
        if (candidate / METADATA_FILE).exists():
            return candidate
    found = sorted(root.rglob(METADATA_FILE))
    if found:
        return found[0].parent
    raise ModelNotFoundError(
        f"Not a deepspark model: no {METADATA_FILE} under it; give a model "
        f"logged by deepspark. Received: model={model_uri!r}"
    )
