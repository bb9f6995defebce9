"""Explaining an image model's predictions in one process: list, sample, explain in chunks."""

from __future__ import annotations

import time

import numpy as np

from deepspark._progress import work_progress
from deepspark.data.image_inputs import chunks
from deepspark.errors import UserInputError
from deepspark.explain.images.explanation import concat_image_explanations
from deepspark.explain.images.sources import (
    NO_BACKGROUND,
    background_positions,
    decode_background,
    image_rows,
)

#: Images per ``explain`` call: bounds the attributions and gradients held at once.
CHUNK_IMAGES = 64


def make_explainer(model, explainer_type, *, seed, options, explained_class):
    """The explainer, validated (layer, class, options) before any image is read."""
    explainer = explainer_type(
        model, None, seed=seed, options=options, explained_class=explained_class
    )
    explainer.validate()
    return explainer


def require_background(explainer) -> None:
    """A method that needs background images got some."""
    if explainer.needs_background and not len(explainer.background):
        raise UserInputError(
            f"Method {explainer.method!r} needs background images and none of the sampled "
            "ones decoded; give images that decode. Received: background=0"
        )


def explain_images_local(model, explainer_type, data, *, rows, background, seed, options,
                         explained_class, master=None):  # fmt: skip
    """Explain the first ``rows`` images of ``data``.

    Returns:
        The ``ImageExplanation`` and facts for the summary.
    """
    from deepspark.explain.api import limit_rows

    explainer = make_explainer(
        model, explainer_type, seed=seed, options=options, explained_class=explained_class
    )
    frame = image_rows(model, data)
    source = NO_BACKGROUND
    if explainer.needs_background:
        positions = background_positions(len(frame), background, seed)
        sample = decode_background(model, frame.iloc[positions].reset_index(drop=True))
        explainer.background, source = sample.pixels, sample.source
        require_background(explainer)
    count = limit_rows(len(frame), rows)
    started = time.perf_counter()
    parts = []
    with work_progress(f"explaining images ({explainer.method})", count) as advance:
        for part in chunks(count, CHUNK_IMAGES):
            row_ids = np.arange(part.start, part.stop)
            parts.append(explainer.explain(frame.iloc[part], row_ids=row_ids))
            advance(part.stop - part.start)
    seconds = time.perf_counter() - started
    explanation = concat_image_explanations(parts)
    facts = {
        "data_rows": len(frame),
        "background": 0 if explainer.background is None else len(explainer.background),
        "background_source": source,
        "seconds": seconds,
    }
    return explanation, facts
