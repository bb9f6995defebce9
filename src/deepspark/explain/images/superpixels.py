"""``lime``: LIME's image explainer (superpixels switched on and off), seeded per image.

LIME segments the image into superpixels (SLIC by default; or LIME's own quickshift), scores
``num_samples`` copies with random superpixels hidden (filled with their mean colour, LIME's
default, or black), and fits a weighted linear model of the explained class's probability on
which superpixels were shown. A superpixel's weight is spread evenly over its pixels, so the
attributions of an image sum to the sum of its superpixels' weights. LIME does not promise
additivity: ``baseline`` is the linear model's intercept and no additivity error is reported.

SLIC is the default because its target count (``segments``, 50) holds at any image size,
while quickshift with LIME's settings (kernel 4, max distance 200) is tuned for large photos
and returns a single superpixel for a 32 px image, which leaves LIME nothing to explain.

Each image gets its own random state from the seed and its row id, so its explanation does not
depend on which images were explained with it, nor where (the Spark job relies on this).
"""

from __future__ import annotations

import contextlib

import numpy as np

from deepspark._optional import require
from deepspark.explain.images.base import Attribution, ImageBatch, ImageExplainer
from deepspark.explain.images.options import check_options, choice, positive_int

DEFAULT_SAMPLES = 1000
SEGMENTATIONS = ("slic", "quickshift")
HIDE_COLORS = ("mean", "black")
DEFAULT_SLIC_SEGMENTS = 50
_OPTIONS = ("num_samples", "segmentation", "segments", "hide_color")


class LimeImageExplainer(ImageExplainer):
    """``lime.lime_image.LimeImageExplainer`` with per-image seeds.

    Options:
        num_samples: Perturbed images per image (default LIME's 1000).
        segmentation: ``slic`` (default) or ``quickshift`` (LIME's own default settings).
        segments: SLIC's target number of superpixels (default 50).
        hide_color: ``mean`` (default: a hidden superpixel takes its mean colour) or ``black``.
    """

    method = "lime"
    additive = False
    needs_background = False

    def validate(self) -> None:
        super().validate()
        check_options(self.method, self.options, _OPTIONS)
        self._settings()

    def _settings(self) -> dict:
        options = self.options
        return {
            "num_samples": positive_int(
                "num_samples", options.get("num_samples", DEFAULT_SAMPLES), minimum=2
            ),
            "segmentation": choice(
                self.method, "segmentation", options.get("segmentation", "slic"),
                SEGMENTATIONS,
            ),
            "segments": positive_int("segments", options.get("segments", DEFAULT_SLIC_SEGMENTS)),
            "hide_color": choice(
                self.method, "hide_color", options.get("hide_color", "mean"), HIDE_COLORS
            ),
        }  # fmt: skip

    def attribute(self, batch: ImageBatch) -> Attribution:
        lime_image = require("lime.lime_image", feature="'lime' image explanations")
        settings = self._settings()
        values = np.zeros(batch.images.shape[:3], dtype=np.float64)
        intercepts = np.zeros(len(batch))
        superpixels = np.zeros(len(batch), dtype=np.int64)
        for position, (row_id, column) in enumerate(zip(batch.row_ids, batch.columns, strict=True)):
            seed = self.row_seed(row_id) % 2**32
            explainer = lime_image.LimeImageExplainer(random_state=np.random.RandomState(seed))
            image = batch.images[position]
            with _quiet(lime_image):
                result = explainer.explain_instance(
                    image[..., 0] if image.shape[-1] == 1 else image,
                    self._classifier(image.shape[-1]),
                    labels=(int(column),),
                    top_labels=None,
                    hide_color=None if settings["hide_color"] == "mean" else 0,
                    num_samples=settings["num_samples"],
                    batch_size=min(settings["num_samples"], 256),
                    segmentation_fn=_segmentation(lime_image, settings, seed),
                )
            values[position], superpixels[position] = _spread_weights(result, int(column))
            intercepts[position] = float(result.intercept[int(column)])
        details = {key: settings[key] for key in ("num_samples", "segmentation", "hide_color")}
        return Attribution(values, intercepts, {"superpixels": superpixels}, details)

    def _classifier(self, channels: int):
        def classify(images: np.ndarray) -> np.ndarray:
            images = np.asarray(images)
            pixels = images[..., :1] if channels == 1 else images
            return self.probabilities(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))

        return classify


@contextlib.contextmanager
def _quiet(lime_image):
    """LIME draws a tqdm bar per image on stderr, with no option to turn it off."""
    bar = getattr(lime_image, "tqdm", None)
    lime_image.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        if bar is not None:
            lime_image.tqdm = bar


def _segmentation(lime_image, settings: dict, seed: int):
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    del lime_image  # imported by the caller for the install hint
    segment_seed = int(seed % 1000)
    if settings["segmentation"] == "slic":
        return SegmentationAlgorithm(
            "slic", n_segments=settings["segments"], compactness=10, sigma=1, start_label=0
        )
    return SegmentationAlgorithm(
        "quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=segment_seed
    )


def _spread_weights(result, column: int) -> tuple[np.ndarray, int]:
    """Per-pixel attributions: each superpixel's weight divided evenly over its pixels."""
    segments = result.segments
    labels, sizes = np.unique(segments, return_counts=True)
    values = np.zeros(segments.shape, dtype=np.float64)
    for feature, weight in result.local_exp[column]:
        label = labels[int(feature)]
        values[segments == label] = weight / sizes[int(feature)]
    return values, len(labels)
