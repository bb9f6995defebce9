"""From a data source to encoded train / validation / test arrays (no Keras, no MLflow)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepspark.config import TrainConfig, with_data_defaults
from deepspark.data.encoding import NUMERIC_INPUT, encode_features, encode_target
from deepspark.data.image_inputs import PATH_COLUMN, find_image_column
from deepspark.data.image_sources import (
    is_image_folder,
    is_image_glob,
    list_image_folder,
    list_image_glob,
)
from deepspark.data.readers import BUILTIN_DATASETS, read_table
from deepspark.data.schema import FeatureSchema, infer_schema, learn_vocabularies
from deepspark.data.splits import DataSplit, split_frame
from deepspark.errors import UserInputError

logger = logging.getLogger("deepspark.training")


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Everything training needs from the data, derived from the training split only."""

    config: TrainConfig
    schema: FeatureSchema
    split: DataSplit
    inputs: dict[str, Any]  # split name -> model inputs (by name; images: pixels or ImageFiles)
    targets: dict[str, np.ndarray]  # split name -> encoded target
    target_center: float
    target_scale: float
    fingerprint: str
    builder: Any = None  # how the network is built (deepspark.models.builders.build_model)
    bad_images: tuple[tuple[str, str], ...] = ()  # (source, reason) left out of training

    @property
    def numeric_train(self) -> np.ndarray | None:
        train = self.inputs["train"]
        return train.get(NUMERIC_INPUT) if isinstance(train, dict) else None


def resolve_target(config: TrainConfig, frame: pd.DataFrame) -> TrainConfig:
    """Fill in a built-in dataset's target, or ask for ``--target`` listing the columns."""
    if config.target:
        return config
    default = BUILTIN_DATASETS.get(config.data)
    if default is None or Path(config.data).exists():
        columns = ", ".join(map(str, frame.columns))
        raise UserInputError(
            f"No target given; pass --target with one of: {columns}. Received: target=None"
        )
    return dataclasses.replace(config, target=default)


def prepare_data(config: TrainConfig, *, model: Any = None) -> PreparedData:
    """Read, infer the schema, split (stratified for classification) and encode.

    Args:
        config: The run's settings.
        model: The ``model`` given to ``train``; checked against the kind of data (tables or
            images) as soon as that is known, before any work on the data.

    Raises:
        DataError / UserInputError: For every problem with the data or the target.
    """
    from deepspark.models.builders import check_model

    if is_image_folder(config.data):
        from deepspark.training.prepare_images import prepare_images

        check_model(model, "image")
        return prepare_images(config, list_image_folder(config.data), PATH_COLUMN)
    if is_image_glob(config.data) and not Path(config.data).exists():
        from deepspark.training.prepare_images import prepare_images

        check_model(model, "image")
        return prepare_images(config, list_image_glob(config.data), PATH_COLUMN)
    frame = read_table(config.data)
    image_column = find_image_column(frame, exclude=[config.target] if config.target else [])
    check_model(model, "tabular" if image_column is None else "image")
    if image_column is not None:
        from deepspark.training.prepare_images import prepare_images

        return prepare_images(config, frame, image_column)
    config = with_data_defaults(resolve_target(config, frame), "tabular")
    schema, frame = infer_schema(frame, config.target, task=config.task, exclude=config.exclude)
    check_loss(config, schema.task)
    stratify = frame[config.target] if schema.task != "regression" else None
    split = split_frame(
        frame,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        stratify=stratify,
    )
    schema = learn_vocabularies(schema, split.train)
    parts = {"train": split.train, "val": split.val, "test": split.test}
    inputs = {name: encode_features(part, schema) for name, part in parts.items()}
    targets = {
        name: shape_target(encode_target(part[config.target], schema), schema.task)
        for name, part in parts.items()
    }
    center, scale = 0.0, 1.0
    if schema.task == "regression":
        center = float(targets["train"].mean())
        scale = float(targets["train"].std()) or 1.0
    logger.info(
        "%s task, %d features; rows: %s",
        schema.task,
        len(schema.features),
        " / ".join(f"{count} {name}" for name, count in split.sizes().items()),
    )
    return PreparedData(
        config=config,
        schema=schema,
        split=split,
        inputs=inputs,
        targets=targets,
        target_center=center,
        target_scale=scale,
        fingerprint=fingerprint(frame),
    )


def shape_target(encoded: np.ndarray, task: str) -> np.ndarray:
    if task == "binary":
        return encoded.reshape(-1, 1).astype(np.float32)
    return encoded


def check_loss(config: TrainConfig, task: str) -> None:
    if config.loss is None:
        return
    regression_loss = config.loss != "crossentropy"
    if regression_loss != (task == "regression"):
        valid = "mse, mae, huber" if task == "regression" else "crossentropy"
        raise UserInputError(
            f"Invalid --loss for a {task} task; valid losses are {valid}. "
            f"Received: loss={config.loss!r}"
        )


def fingerprint(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return f"{len(frame)}:{int(hashed.sum(dtype=np.uint64))}"
