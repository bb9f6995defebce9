"""A pretrained ImageNet classifier as a deepspark image model, and logging it to MLflow.

``log_pretrained("mobilenet_v2", weights=...)`` logs the 1000-class network as a deepspark
image model (task ``multiclass``, the 1000 ImageNet names as its classes), so it scores through
every path a trained image model does: ``deepspark predict``, ``deepspark.load_model``, MLflow
pyfunc, ``deepspark.spark.predict`` and SQL.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from deepspark.errors import UserInputError

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
TARGET = "label"


def check_image_size(image_size: Any) -> tuple[int, int] | None:
    """``None``, ``224``, ``"224"``, ``"224,160"`` or ``(224, 160)`` -> ``(height, width)``.

    Raises:
        UserInputError: Not one or two positive integers.
    """
    if image_size is None:
        return None
    parts = image_size.replace("x", ",").split(",") if isinstance(image_size, str) else image_size
    parts = [parts] if isinstance(parts, int | float) else list(parts)
    try:
        sides = tuple(int(str(part).strip()) for part in parts)
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or min(sides) <= 0:
        raise UserInputError(
            f"Invalid --image-size: give a positive size such as 224 or 224,160. "
            f"Received: image_size={image_size!r}"
        )
    return sides


def pretrained_metadata(
    model: str, weights: str | Path | None, base_options: dict[str, Any] | None
) -> dict[str, Any]:
    """What a model built from a pretrained network records about its origin: the network,
    its weights (``imagenet``, or a local file's name and SHA-256) and base options."""
    from deepspark.models.applications import check_weights, find_application

    resolved = check_weights(weights)
    document: dict[str, Any] = {
        "pretrained": find_application(model).name,
        "weights": resolved if resolved in (None, "imagenet") else Path(resolved).name,
        "base_options": dict(base_options or {}),
    }
    if resolved not in (None, "imagenet"):
        digest = hashlib.sha256(Path(resolved).read_bytes()).hexdigest()
        document["weights_sha256"] = digest
    return document


def pretrained_classifier(
    model: str = "mobilenet_v2",
    *,
    weights: str | Path | None = "imagenet",
    base_options: dict[str, Any] | None = None,
    image_size: Any = None,
):
    """The 1000-class ImageNet network as a ``DeepsparkModel`` (raw image bytes or paths in;
    ``prediction``, one ``probability_<class>`` per ImageNet class and ``error`` out).

    Raises:
        UserInputError: Unknown network, missing weights file, bad options or size.
    """
    from deepspark.data.image_inputs import image_schema
    from deepspark.data.schema import ImageSpec
    from deepspark.models.applications import build_pretrained, imagenet_class_names
    from deepspark.tracking.model import DeepsparkModel

    keras_model = build_pretrained(
        model,
        weights=weights,
        include_top=True,
        image_size=check_image_size(image_size),
        base_options=base_options,
    )
    height, width = keras_model.input.shape[1:3]
    schema = image_schema(
        ImageSpec(int(height), int(width), 3),
        target=TARGET,
        task="multiclass",
        class_labels=imagenet_class_names(),
        column=IMAGE_COLUMN,
    )
    return DeepsparkModel(keras_model, schema, pretrained_metadata(model, weights, base_options))


def log_pretrained(
    model: str = "mobilenet_v2",
    *,
    weights: str | Path | None = "imagenet",
    base_options: dict[str, Any] | None = None,
    image_size: Any = None,
    experiment: str = "deepspark",
    run_name: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log a pretrained ImageNet classifier to MLflow as a deepspark image model.

    Args:
        model: A keras.applications network, any spelling (``mobilenet_v2``, ``ResNet50``).
        weights: ``"imagenet"`` (Keras downloads them) or a local weights file with the top.
        base_options: Constructor options, e.g. ``{"alpha": 0.35}``.
        image_size: Input size (224 or ``(224, 224)``); default the network's native size.
        experiment: MLflow experiment.
        run_name: MLflow run name (default ``pretrained-<network>``).
        tracking_uri: MLflow tracking URI (default: MLflow's own default).

    Returns:
        The logged model's URI (``models:/...``); ``deepspark predict --model URI`` scores
        images with it.

    Raises:
        UserInputError: Unknown network, missing weights file, bad options or size.

    Example:
        >>> uri = deepspark.log_pretrained("mobilenet_v2", weights="top.weights.h5")
        >>> deepspark.load_model(uri).predict(pd.DataFrame({"path": ["cat.jpg"]}))
    """
    import mlflow

    from deepspark._backend import backend_name
    from deepspark.tracking.pyfunc import log_pyfunc_model
    from deepspark.tracking.run import tracked_run
    from deepspark.workflows.train import MODEL_URI_TAG

    classifier = pretrained_classifier(
        model, weights=weights, base_options=base_options, image_size=image_size
    )
    origin = classifier.metadata
    with tracked_run(
        experiment=experiment,
        run_name=run_name or f"pretrained-{origin['pretrained']}",
        tracking_uri=tracking_uri,
    ) as active:
        classifier.metadata = {**origin, "run_id": active.info.run_id}
        spec = classifier.schema.image
        mlflow.log_params(
            {
                "model": origin["pretrained"],
                "weights": origin["weights"],
                "image_size": f"{spec.height},{spec.width}",
                **{f"base_option.{key}": value for key, value in origin["base_options"].items()},
            }
        )
        mlflow.set_tags(
            {
                "deepspark.task": "multiclass",
                "deepspark.kind": "image",
                "deepspark.keras_backend": backend_name(),
                "deepspark.pretrained": origin["pretrained"],
            }
        )
        mlflow.log_dict(classifier.schema.to_dict(), "feature_schema.json")
        model_uri = log_pyfunc_model(classifier, None).model_uri
        mlflow.set_tag(MODEL_URI_TAG, model_uri)
    logger.info("logged %s as %s", origin["pretrained"], model_uri)
    return model_uri
