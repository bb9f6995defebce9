"""``fine_tune``: fastai's one call for transfer learning, on Keras (either backend) and MLflow.

Without ``lr``, a learning-rate range test (``find_learning_rate``) on the frozen model picks
the rate; then the head trains ``freeze_epochs`` epochs with the base frozen, and the whole
network ``epochs`` more epochs at a tenth of that rate (BatchNorm in inference mode), in one
tracked run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from deepspark.errors import UserInputError

logger = logging.getLogger("deepspark.training")


def fine_tune(
    data: str,
    target: str | None = None,
    *,
    base: str = "mobilenet_v2",
    weights: str | Path | None = "imagenet",
    epochs: int = 5,
    freeze_epochs: int = 1,
    lr: float | None = None,
    lr_find_steps: int = 100,
    tracking_uri: str | None = None,
    **settings: Any,
):
    """Transfer-learn ``base`` on an image folder (or image table) in one call.

    Args:
        data: An image folder, glob or table of image paths / bytes, local or a URI
            (``s3://bucket/photos/``), as for ``train``.
        target: The label column (image folders: ``label``).
        base: A keras.applications network.
        weights: ``imagenet``, a local weights file, or ``None``.
        epochs: Epochs with the whole network unfrozen (at ``lr / 10``).
        freeze_epochs: Epochs of the head alone first (at ``lr``).
        lr: The head's learning rate; ``None``: ``find_learning_rate``'s suggestion.
        lr_find_steps: Batches of that range test.
        tracking_uri: MLflow tracking URI.
        **settings: Any other ``train`` setting (``image_size``, ``augment``,
            ``class_weight``, ``base_options``, ``batch_size``, ``tensorboard`` for event
            files of both phases, ``register`` / ``aliases``...).

    Returns:
        ``train``'s ``TrainResult`` (the suggested rate is the run's ``lr`` param).

    Raises:
        UserInputError: Bad data or settings.

    Example:
        >>> result = deepspark.fine_tune("photos/", base="mobilenet_v2", epochs=3)
    """
    from deepspark.workflows.train import train

    for name, value in (("epochs", epochs), ("freeze_epochs", freeze_epochs)):
        if int(value) < 1:
            raise UserInputError(f"{name} must be at least 1. Received: {name}={value!r}")
    weights = "none" if weights is None else str(weights)
    common = {"base": base, "weights": weights, "tracking_uri": tracking_uri, **settings}
    if lr is None:
        from deepspark.workflows.lr_find import find_learning_rate

        found = find_learning_rate(data, target, steps=lr_find_steps, log=False, **common)
        lr = found["suggested_lr"]
        logger.info("learning rate %.3g from lr_find (%s)", lr, found["rule"])
    return train(
        data,
        target,
        lr=lr,
        epochs=int(freeze_epochs),
        fine_tune_layers="all",
        fine_tune_epochs=int(epochs),
        patience=max(int(epochs), int(freeze_epochs)) + 1,  # fastai trains every epoch asked
        **common,
    )
