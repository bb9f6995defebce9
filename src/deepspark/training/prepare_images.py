"""From image rows (a folder's listing or a table's image column) to train / validation / test.

Every image is decoded once here, in parallel: bad files are found before training (so every
batch has the same shape, and a bad file never stops an epoch), counted and listed with their
reason. When the decoded images fit ``image_memory_bytes()`` they stay in memory; otherwise
only their sources are kept and training decodes them a batch at a time (``ImageFiles``).

Sources are bytes, local paths or URIs (an ``s3://`` folder lists as ``s3://`` URIs, see
``data.image_sources``): distributed shards keep them as they are, so with a remote source no
rank ever gets a path that only the driver's host can read, and each rank decodes its own.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pandas as pd

from deepspark._progress import work_progress
from deepspark.config import TrainConfig, with_data_defaults
from deepspark.data.encoding import encode_target
from deepspark.data.image_decode import image_dimensions
from deepspark.data.image_inputs import (
    ImageFiles,
    chunks,
    decode_rows,
    image_schema,
)
from deepspark.data.schema import (
    ImageSpec,
    drop_missing_target,
    find_class_labels,
    infer_task,
)
from deepspark.data.splits import MIN_EVAL_ROWS, MIN_TRAIN_ROWS, DataSplit, split_frame
from deepspark.errors import DataError, UserInputError
from deepspark.training.prepare import PreparedData, check_loss, fingerprint, shape_target

logger = logging.getLogger("deepspark.training")

FOLDER_TARGET = "label"
DEFAULT_MAX_SIDE = 128
_DECODE_CHUNK = 256


def image_memory_bytes() -> int:
    """Decoded images up to this size stay in memory for training (``DEEPSPARK_IMAGE_MEMORY_MB``,
    default 2048); larger data sets are decoded a batch at a time every epoch."""
    return int(float(os.environ.get("DEEPSPARK_IMAGE_MEMORY_MB", "2048")) * 2**20)


def prepare_images(config: TrainConfig, frame: pd.DataFrame, column: str) -> PreparedData:
    """Split, decode and encode image rows for training.

    Args:
        config: The run's settings (target, task, image size, ``on_bad_image``...).
        frame: One row per image: ``column`` (paths or bytes), the label, and for image folders
            ``split`` (the folder's own train / val / test, or ``None``).
        column: The column holding the images.

    Raises:
        DataError / UserInputError: A missing label column, one class, a regression target,
            too few good images for a split, or (``on_bad_image="fail"``) a bad image.
    """
    config = with_data_defaults(_resolve_image_target(config, frame, column), "image")
    target = config.target
    frame = drop_missing_target(frame, target)
    task = config.task or infer_task(frame[target].astype(str))
    if task == "regression":
        raise UserInputError(
            "Image models classify: give a label column with classes (text or integers), or "
            f"--task binary / multiclass. Received: task={task!r}"
        )
    check_loss(config, task)
    labels = find_class_labels(frame[target], task, target)
    split = _split(config, frame)
    spec = _image_spec(config, split.train[column].tolist())
    schema = image_schema(
        spec,
        target=target,
        task=task,
        class_labels=labels,
        column=column,
    )
    parts, bad = _decode_splits(config, split, column, spec)
    split = DataSplit(**{name: part for name, (part, _) in parts.items()})
    _check_split_sizes(split, bad)
    targets = {
        name: shape_target(encode_target(part[target], schema), task)
        for name, (part, _) in parts.items()
    }
    logger.info(
        "%s task, %d classes, images %dx%dx%d; rows: %s%s",
        task,
        len(labels),
        spec.height,
        spec.width,
        spec.channels,
        " / ".join(f"{count} {name}" for name, count in split.sizes().items()),
        f"; {len(bad)} bad image(s) left out" if bad else "",
    )
    return PreparedData(
        config=config,
        schema=schema,
        split=split,
        inputs={name: images for name, (_, images) in parts.items()},
        targets=targets,
        target_center=0.0,
        target_scale=1.0,
        fingerprint=fingerprint(frame[[column, target]]),
        bad_images=tuple(bad),
    )


def _resolve_image_target(config: TrainConfig, frame: pd.DataFrame, column: str) -> TrainConfig:
    columns = [str(name) for name in frame.columns if name not in (column, "split")]
    target = config.target or (FOLDER_TARGET if FOLDER_TARGET in frame.columns else None)
    if target is None or target not in frame.columns or target == column:
        raise DataError(
            f"Label column not found next to the images in '{column}'; pass --target with one "
            f"of: {', '.join(columns) or '(none)'}. Received: target={config.target!r}"
        )
    return dataclasses.replace(config, target=target)


def _split(config: TrainConfig, frame: pd.DataFrame) -> DataSplit:
    """The folder's own train / val / test when it has them, else a stratified draw."""
    own = frame["split"] if "split" in frame.columns else pd.Series(dtype=object)
    if not own.notna().any():
        return split_frame(
            frame.drop(columns="split", errors="ignore"),
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
            stratify=frame[config.target].astype(str),
        )
    parts = {
        name: frame[own == name].drop(columns="split").reset_index(drop=True)
        for name in ("train", "val", "test")
    }
    if parts["val"].empty:  # train/ (and test/) only: validation comes out of train/
        drawn = split_frame(
            parts["train"],
            val_fraction=config.val_fraction,
            test_fraction=0.0,
            seed=config.seed,
            stratify=parts["train"][config.target].astype(str),
        )
        parts["train"], parts["val"] = drawn.train, drawn.val
    elif parts["test"].empty:  # train/ and val/ only: the test split comes out of val/
        parts["val"], parts["test"] = _hold_out_test(config, parts["val"])
    used = ", ".join(name for name, part in parts.items() if len(part))
    logger.info("using the folder's own split (%s)", used)
    return DataSplit(**parts)


def _hold_out_test(config: TrainConfig, val: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(val, test)`` from a ``val/`` folder when there is no ``test/`` folder: per class, a
    seeded draw of ``test_fraction / (val_fraction + test_fraction)`` of its images (half with
    the defaults) becomes the test split, so that a test score exists. Nothing is held out with
    ``test_fraction=0`` or when either part would have fewer than ``MIN_EVAL_ROWS`` images."""
    share = config.test_fraction / (config.val_fraction + config.test_fraction)
    rng = np.random.default_rng(config.seed)
    codes = pd.factorize(val[config.target].astype(str).to_numpy(), sort=True)[0]
    held = np.zeros(len(val), dtype=bool)
    for code in range(codes.max() + 1 if len(codes) else 0):
        rows = rng.permutation(np.flatnonzero(codes == code))
        held[rows[: int(round(len(rows) * share))]] = True
    count = int(held.sum())
    if count < MIN_EVAL_ROWS or len(val) - count < MIN_EVAL_ROWS:
        if share > 0:
            logger.info(
                "no test/ folder, and val/ has too few images (%d) to hold some out as test: "
                "no test split",
                len(val),
            )
        return val, val.iloc[:0]
    logger.info(
        "no test/ folder: %d of the %d val images held out as test (test_fraction / "
        "(val_fraction + test_fraction) of each class, seed %d)",
        count,
        len(val),
        config.seed,
    )
    return val[~held].reset_index(drop=True), val[held].reset_index(drop=True)


def _image_spec(config: TrainConfig, train_sources: list) -> ImageSpec:
    if config.image_size is not None:
        return ImageSpec(int(config.image_size[0]), int(config.image_size[1]), 3)
    if config.base:  # the pretrained network's own input size
        from deepspark.models.applications import find_application

        side = find_application(config.base).native_size
        return ImageSpec(side, side, 3)
    for source in train_sources[:50]:
        dimensions = image_dimensions(source)
        if dimensions is not None:
            side = min(DEFAULT_MAX_SIDE, *dimensions)
            logger.info("image size %dx%d (set it with --image-size)", side, side)
            return ImageSpec(side, side, 3)
    raise DataError(
        "None of the first training images could be read; check the files, or give "
        "--image-size. Received: data=" + repr(config.data)
    )


def _decode_splits(config: TrainConfig, split: DataSplit, column: str, spec: ImageSpec):
    """Decode every image once: bad ones are dropped from their split and reported."""
    total = sum(split.sizes().values())
    in_memory = total * spec.pixel_bytes <= image_memory_bytes()
    if not in_memory:
        logger.info("images are decoded a batch at a time (more than DEEPSPARK_IMAGE_MEMORY_MB)")
    parts, bad = {}, []
    with work_progress("decoding images", total) as advance:
        for name in ("train", "val", "test"):
            part = getattr(split, name)
            sources = part[column].tolist()
            arrays, ok = [], np.zeros(len(sources), dtype=bool)
            for rows in chunks(len(sources), _DECODE_CHUNK):
                decoded = decode_rows(sources[rows], spec, on_bad=config.on_bad_image)
                ok[rows] = decoded.ok
                bad += [(_name(sources[rows][i]), reason) for i, reason in decoded.errors]
                if in_memory:
                    arrays.append(decoded.images)
                advance(rows.stop - rows.start)
            kept = part[ok].reset_index(drop=True)
            if in_memory:
                pixels = np.concatenate(arrays) if arrays else _empty(spec)
                parts[name] = (kept, pixels)
            else:
                parts[name] = (kept, ImageFiles(tuple(kept[column].tolist()), spec))
    for source, reason in bad[:5]:
        logger.warning("bad image %s: %s", source, reason)
    return parts, bad


def _name(source) -> str:
    return f"({len(source)} bytes)" if isinstance(source, bytes | bytearray) else str(source)


def _empty(spec: ImageSpec) -> np.ndarray:
    return np.zeros((0, spec.height, spec.width, spec.channels), dtype=np.uint8)


def _check_split_sizes(split: DataSplit, bad: list) -> None:
    sizes = split.sizes()
    if sizes["train"] < MIN_TRAIN_ROWS or sizes["val"] < MIN_EVAL_ROWS:
        raise DataError(
            f"Too few good images: {sizes['train']} train / {sizes['val']} validation after "
            f"leaving out {len(bad)} bad one(s); need at least {MIN_TRAIN_ROWS} train and "
            f"{MIN_EVAL_ROWS} validation images. Received: rows={sizes}"
        )
