"""Runnable lessons: each writes PNG plots and returns the numbers behind its claims.

Topics:

- ``activations``: every activation and its derivative; sigmoid saturation; zero-centring;
  dead ReLU units after a bad initialisation and how LeakyReLU / ELU avoid them.
- ``losses``: MSE / RMSE versus MAE when a few predictions miss badly.
- ``optimizers``: SGD, momentum, Nesterov and Adam on a function with a local minimum, on an
  ill-conditioned valley, and with learning rates too low, right and too high.
- ``splits``: the optimism of a score when the test set chose the hyperparameter.
- ``approximation``: a NumPy MLP trained with NumPy Adam, wider and wider.
- ``convolutions``: classic kernels (edge, blur, sharpen) sliding over a photo, output sizes for
  paddings and strides, and the parameters of a convolution versus a dense layer.
- ``gan``: a DCGAN (Keras, a custom ``train_step``) learns scikit-learn's 8x8 digits, tracked in
  MLflow with a sample grid per epoch; mode collapse measured by a digit classifier, and the
  discriminator/generator balance against the ``2 ln 2`` equilibrium.

Example::

    from deepspark.fundamentals import run_lesson

    figures = run_lesson("losses", "lesson-output")
    figures["outlier_share_of_squared_loss"], figures["outlier_share_of_absolute_loss"]
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from deepspark.errors import UserInputError

#: Topic -> private module holding its ``run(output_dir) -> dict``.
TOPICS = {
    "activations": "deepspark.fundamentals._lesson_activations",
    "losses": "deepspark.fundamentals._lesson_losses",
    "optimizers": "deepspark.fundamentals._lesson_optimizers",
    "splits": "deepspark.fundamentals._lesson_splits",
    "approximation": "deepspark.fundamentals._lesson_approximation",
    "convolutions": "deepspark.fundamentals._lesson_convolutions",
    "gan": "deepspark.fundamentals._lesson_gan",
}


#: Topics whose lesson can use the user's own photo.
IMAGE_TOPICS = ("convolutions",)
EPOCH_TOPICS = ("gan",)


def run_lesson(
    topic: str,
    output_dir: str | os.PathLike[str],
    *,
    image: str | None = None,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Run one lesson: write its plots into ``output_dir`` and return its key figures.

    Everything is seeded and small, so a lesson takes a few seconds and gives the same numbers
    on every run.

    Args:
        topic: One of ``activations``, ``losses``, ``optimizers``, ``splits``, ``approximation``,
            ``convolutions``, ``gan``.
        output_dir: Folder for the PNG files; created when missing. The ``gan`` lesson also
            logs an MLflow run (experiment ``deepspark-lessons``) to the tracking URI in force.
        image: A photo for the ``convolutions`` lesson (default: a generated scene).
        epochs: Passes over the data for the lessons that train (``gan``; default 30).

    Returns:
        A JSON-ready dictionary: ``topic``, ``plots`` (paths of the PNG files written) and the
        lesson's figures (floats, ints, strings, booleans and lists of them).

    Raises:
        UserInputError: For an unknown topic, or an ``output_dir`` that is an existing file.
    """
    if topic not in TOPICS:
        raise UserInputError(
            f"Unknown lesson topic; use one of {', '.join(TOPICS)}. Received: topic={topic!r}"
        )
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise UserInputError(
            "output_dir is a file, not a folder; pass a folder path (it is created when missing). "
            f"Received: output_dir={str(folder)!r}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if image is not None and topic not in IMAGE_TOPICS:
        raise UserInputError(
            f"Only the {', '.join(IMAGE_TOPICS)} lesson takes --image. Received: topic={topic!r}"
        )
    if epochs is not None and topic not in EPOCH_TOPICS:
        raise UserInputError(
            f"Only the {', '.join(EPOCH_TOPICS)} lesson takes --epochs. Received: topic={topic!r}"
        )
    options: dict[str, Any] = {"image": image} if image is not None else {}
    if epochs is not None:
        options["epochs"] = epochs
    figures = importlib.import_module(TOPICS[topic]).run(folder, **options)
    return {"topic": topic, **figures}
