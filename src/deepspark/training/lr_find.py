"""The learning-rate range test (Smith, 2017; fastai's ``lr_find``): train a copy of a model for a
few hundred batches while the learning rate grows exponentially, watch the loss, suggest a rate.

- ``LRRangeTest``: the Keras callback that raises the rate batch by batch and records the loss.
- ``suggest_learning_rate``: the rule that turns the recorded curve into one rate.
- ``lr_find``: one call: copies a compiled model, runs the test on the copy, returns an
  ``LRFindResult``; the model passed in is not touched.
- ``plot_lr_find``: the loss against the rate as a PNG.

The suggestion is the rate where the smoothed loss falls fastest before its minimum (the rate at
the minimum / 10 when it never falls): ``suggest_learning_rate`` states the rule exactly, and
each result names the rule that chose its rate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepspark._backend import import_keras
from deepspark.errors import UserInputError
from deepspark.training.optimizers import set_learning_rate

keras = import_keras()
logger = logging.getLogger("deepspark.training")

RULE_STEEPEST = (
    "steepest descent of the smoothed loss (most negative d loss / d log10 lr, each slope taken "
    "across 5% of the steps either side), between the first 10% of steps and the minimum of the "
    "smoothed loss"
)
RULE_MIN_OVER_10 = "lr at the minimum of the smoothed loss / 10 (no falling stretch to pick from)"
SMOOTHING_BETA = 0.98
DIVERGENCE_FACTOR = 4.0
SKIP_START_FRACTION = 0.1
SLOPE_SPAN_FRACTION = 0.05


def check_range_settings(*, min_lr: float, max_lr: float, steps: int) -> None:
    """Raise ``UserInputError`` for a range test that cannot run: the one validation place of
    ``LRRangeTest``, ``lr_find`` and the ``lr-find`` command."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 2:
        raise UserInputError(
            "Invalid --steps: the range test needs at least 2 steps (200 is usual). "
            f"Received: steps={steps!r}"
        )
    for name, rate in (("min_lr", min_lr), ("max_lr", max_lr)):
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            option = "--" + name.replace("_", "-")
            raise UserInputError(
                f"Invalid {option}: must be a positive number such as 1e-7. "
                f"Received: {name}={rate!r}"
            )
    if min_lr >= max_lr:
        raise UserInputError(
            "Invalid --min-lr: the range test goes from --min-lr up to a larger --max-lr "
            f"(1e-7 to 10 is usual). Received: min_lr={min_lr!r}, max_lr={max_lr!r}"
        )


class LRRangeTest(keras.callbacks.Callback):
    """Raise the learning rate exponentially from ``min_lr`` to ``max_lr`` over ``steps``
    batches, record each batch's loss, and stop when the loss diverges or the steps are done.

    The rate of step ``k`` (0-based) is ``min_lr * (max_lr / min_lr) ** (k / (steps - 1))``. The
    smoothed loss is fastai's: an exponential moving average with ``beta`` 0.98, divided by
    ``1 - beta ** (k + 1)`` (bias correction, so early values are not pulled towards 0).
    Training stops when the smoothed loss exceeds 4 times the lowest smoothed loss so far (a
    loss that is not positive never counts as diverged), or when a loss is not finite.

    The callback resets the model's metrics before each batch, so that the loss Keras logs is
    that batch's own (Keras logs a running mean over the epoch): use it on a model you train
    only for the test (``lr_find`` makes such a copy).

    Args:
        min_lr: The first rate.
        max_lr: The last rate (reached at step ``steps``, unless the loss diverges first).
        steps: Batches in the test.
        beta: Smoothing factor of the moving average.
        divergence_factor: Stop when the smoothed loss exceeds this multiple of its minimum.

    Attributes:
        rates_: The rate of each recorded step.
        losses_: Each recorded step's loss.
        smoothed_: The smoothed loss at each recorded step.
        stopped_early_: Whether the loss diverged before ``steps``.
    """

    def __init__(
        self,
        *,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        steps: int = 200,
        beta: float = SMOOTHING_BETA,
        divergence_factor: float = DIVERGENCE_FACTOR,
    ):
        super().__init__()
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.steps = steps
        self.beta = beta
        self.divergence_factor = divergence_factor

    def rate_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.steps - 1))

    def on_train_begin(self, logs=None):
        check_range_settings(min_lr=self.min_lr, max_lr=self.max_lr, steps=self.steps)
        self.rates_: list[float] = []
        self.losses_: list[float] = []
        self.smoothed_: list[float] = []
        self.stopped_early_ = False
        self._step = 0
        self._average = 0.0
        self._best = math.inf

    def on_train_batch_begin(self, batch, logs=None):
        model = self.model
        set_learning_rate(model, self.rate_at(self._step))
        model.reset_metrics()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        rate = self.rate_at(self._step)
        self._step += 1
        if not math.isfinite(loss):
            self._stop(diverged=True)
            return
        self._average = self.beta * self._average + (1 - self.beta) * loss
        smoothed = self._average / (1 - self.beta**self._step)
        self.rates_.append(rate)
        self.losses_.append(loss)
        self.smoothed_.append(smoothed)
        if 0 < self._best < smoothed / self.divergence_factor:
            self._stop(diverged=True)
            return
        self._best = min(self._best, smoothed)
        if self._step >= self.steps:
            self._stop(diverged=False)

    def _stop(self, *, diverged: bool) -> None:
        self.stopped_early_ = diverged
        self.model.stop_training = True


def suggest_learning_rate(
    rates: Sequence[float], smoothed_losses: Sequence[float]
) -> tuple[float, str]:
    """The learning rate to train at, from a range test's curve, and the rule that chose it.

    The rule (``RULE_STEEPEST``): the rate at the steepest descent of the smoothed loss, the
    most negative ``d loss / d log10(rate)``, among the points from the first tenth of the test
    (``SKIP_START_FRACTION``) to the minimum of the smoothed loss. The slope at point ``i`` is
    taken between points ``i - h`` and ``i + h`` (``h``: 5% of the points, at least 1,
    ``SLOPE_SPAN_FRACTION``; clipped to that stretch). Fallback (``RULE_MIN_OVER_10``), when the
    stretch has fewer than 2 points or never falls: the rate at the minimum of the smoothed
    loss, divided by 10.

    Args:
        rates: The rates of the test, increasing.
        smoothed_losses: The smoothed loss at each rate.

    Returns:
        ``(rate, rule)``, ``rule`` being ``RULE_STEEPEST`` or ``RULE_MIN_OVER_10``.

    Raises:
        UserInputError: No finite point to suggest from.
    """
    rates_array = np.asarray(rates, dtype=np.float64)
    losses = np.asarray(smoothed_losses, dtype=np.float64)
    finite = np.isfinite(losses) & np.isfinite(rates_array) & (rates_array > 0)
    if len(rates_array) != len(losses) or not finite.any():
        raise UserInputError(
            "The range test recorded no finite loss to suggest a learning rate from; lower "
            f"--min-lr or check the data. Received: points={len(losses)}"
        )
    rates_array, losses = rates_array[finite], losses[finite]
    lowest = int(np.argmin(losses))
    start = int(len(losses) * SKIP_START_FRACTION)
    if lowest - start >= 1:
        span = max(1, round(len(losses) * SLOPE_SPAN_FRACTION))
        points = np.arange(start, lowest + 1)
        before = np.maximum(points - span, start)
        after = np.minimum(points + span, lowest)
        log_rates = np.log10(rates_array)
        slopes = (losses[after] - losses[before]) / (log_rates[after] - log_rates[before])
        steepest = int(np.argmin(slopes))
        if slopes[steepest] < 0:
            return float(rates_array[points[steepest]]), RULE_STEEPEST
    return float(rates_array[lowest] / 10), RULE_MIN_OVER_10


@dataclasses.dataclass(frozen=True)
class LRFindResult:
    """A range test's curve and suggestion.

    Attributes:
        rates: The learning rate of each step.
        losses: Each step's training loss.
        smoothed: The smoothed loss (see ``LRRangeTest``).
        suggestion: The suggested learning rate.
        rule: How ``suggestion`` was chosen (see ``suggest_learning_rate``).
        stopped_early: The loss diverged before the last step.
    """

    rates: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float
    rule: str
    stopped_early: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists for the curves)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }


def lr_find(
    model,
    x,
    y=None,
    *,
    batch_size: int = 64,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 200,
    callbacks: Sequence = (),
) -> LRFindResult:
    """Run the learning-rate range test on a copy of ``model`` and suggest a rate.

    The copy starts from the model's current weights with a fresh optimizer of the same kind
    and settings (its state, such as Adam's moments and the step count, starts at zero) and the
    model's loss; ``model`` itself, its weights and its optimizer are not touched. The data is
    shuffled and cycled through again when ``steps`` is more than one epoch.

    Args:
        model: A compiled Keras model (functional or sequential: the copy is
            ``keras.models.clone_model``).
        x: Inputs: an array, a dict of arrays by input name, or a ``keras.utils.PyDataset``
            of ``(inputs, targets)`` batches.
        y: Targets (not with a ``PyDataset``).
        batch_size: Rows per step (arrays only; a ``PyDataset`` has its own).
        min_lr: The first rate.
        max_lr: The last rate.
        steps: Batches in the test (it stops sooner if the loss diverges).
        callbacks: More callbacks for the test's ``fit`` (after ``LRRangeTest``).

    Returns:
        An ``LRFindResult`` with the curve, ``suggestion`` and ``rule``.

    Raises:
        UserInputError: Bad settings, a model that is not compiled, or data of unknown size.

    Example:
        >>> result = lr_find(model, x_train, y_train, steps=100)
        >>> model.optimizer.learning_rate = result.suggestion
    """
    check_range_settings(min_lr=min_lr, max_lr=max_lr, steps=steps)
    data, batches_per_epoch = _fit_data(x, y, batch_size)
    trial = _trial_copy(model, min_lr)
    test = LRRangeTest(min_lr=min_lr, max_lr=max_lr, steps=steps)
    trial.fit(
        **data,
        epochs=math.ceil(steps / batches_per_epoch),
        verbose=0,
        callbacks=[test, *callbacks],
    )
    suggestion, rule = suggest_learning_rate(test.rates_, test.smoothed_)
    logger.info(
        "Range test: %d steps from %.2g to %.2g%s; suggested learning rate %.3g",
        len(test.rates_),
        min_lr,
        test.rates_[-1],
        " (loss diverged)" if test.stopped_early_ else "",
        suggestion,
    )
    return LRFindResult(
        rates=tuple(test.rates_),
        losses=tuple(test.losses_),
        smoothed=tuple(test.smoothed_),
        suggestion=suggestion,
        rule=rule,
        stopped_early=test.stopped_early_,
    )


def _trial_copy(model, first_rate: float):
    """A compiled copy of ``model``: same layers and weights (``clone_model`` keeps each layer's
    ``trainable``, so frozen layers stay frozen), the same loss, a fresh optimizer of the same
    class and settings, no metrics (only the loss counts)."""
    optimizer = getattr(model, "optimizer", None)
    if not getattr(model, "compiled", False) or optimizer is None:
        raise UserInputError(
            "lr_find needs a compiled Keras model (model.compile(optimizer=..., loss=...)). "
            f"Received: model={type(model).__name__}"
        )
    try:
        trial = keras.models.clone_model(model)
    except (TypeError, ValueError, NotImplementedError) as error:
        raise UserInputError(
            "lr_find copies the model with keras.models.clone_model, which needs a functional "
            "or sequential model (or layers with get_config). "
            f"Received: model={type(model).__name__} ({error})"
        ) from error
    trial.set_weights(model.get_weights())
    settings = optimizer.get_config()
    settings["learning_rate"] = float(first_rate)  # a schedule would not take the test's rates
    trial.compile(optimizer=type(optimizer).from_config(settings), loss=model.loss)
    return trial


def _fit_data(x, y, batch_size: int) -> tuple[dict[str, Any], int]:
    """``fit``'s data arguments and the batches in one epoch."""
    if isinstance(x, keras.utils.PyDataset):
        if y is not None:
            raise UserInputError(
                "A PyDataset yields (inputs, targets) batches; pass no y with it. "
                f"Received: y={type(y).__name__}"
            )
        batches = x.num_batches
        if not batches:
            raise UserInputError(
                "lr_find needs a PyDataset with a known, non-zero number of batches (__len__). "
                f"Received: num_batches={batches!r}"
            )
        return {"x": x}, int(batches)
    if isinstance(batch_size, bool) or int(batch_size) <= 0:
        raise UserInputError(
            f"Invalid --batch-size: must be a positive integer. Received: batch_size={batch_size!r}"
        )
    leaves = keras.tree.flatten(x)
    rows = len(leaves[0]) if leaves else 0
    if rows == 0:
        raise UserInputError(
            f"lr_find needs training rows; the inputs are empty. Received: rows={rows}"
        )
    data = {"x": x, "y": y, "batch_size": int(batch_size), "shuffle": True}
    return data, math.ceil(rows / int(batch_size))


def plot_lr_find(result: LRFindResult, path: str | Path) -> Path:
    """Write the loss against the learning rate (log scale) as a PNG, the suggestion marked.

    The y axis shows the smoothed loss from its lowest value up to its highest before the
    minimum, so that a diverging tail does not flatten the curve; the file is written
    atomically.

    Args:
        result: From ``lr_find``.
        path: The PNG file to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from deepspark._atomic import atomic_path

    path = Path(path)
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    try:
        axes.plot(result.rates, result.losses, color="0.75", linewidth=0.8, label="loss per step")
        axes.plot(result.rates, result.smoothed, color="C0", label="smoothed loss")
        suggested = float(np.interp(result.suggestion, result.rates, result.smoothed))
        axes.axvline(result.suggestion, color="C3", linestyle="--", linewidth=1)
        axes.plot([result.suggestion], [suggested], "o", color="C3")
        axes.plot([], [], "o--", color="C3", label=f"suggested lr {result.suggestion:.3g}")
        axes.set_xscale("log")
        axes.set_ylim(*_loss_limits(result.smoothed))
        axes.set_xlabel("learning rate (log scale)")
        axes.set_ylabel("training loss")
        axes.set_title("Learning-rate range test", fontsize=11)
        axes.legend(loc="upper left", fontsize=8)
        rule = textwrap.fill(f"suggestion: {result.rule}", 100)
        figure.text(0.01, 0.01, rule, fontsize=7, va="bottom", color="0.3")
        figure.tight_layout(rect=(0, 0.08, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=110)
    finally:
        pyplot.close(figure)
    return path


def _loss_limits(smoothed: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(smoothed, dtype=np.float64)
    lowest = int(np.argmin(values))
    bottom, top = float(values[lowest]), float(values[: lowest + 1].max())
    if top <= bottom:
        top = float(values.max())
    margin = 0.1 * (top - bottom) or 0.1 * abs(bottom) or 1.0
    return bottom - margin, top + margin
