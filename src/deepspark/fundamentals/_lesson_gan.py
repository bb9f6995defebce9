"""Lesson ``gan``: a DCGAN learns to draw scikit-learn's 8x8 digits.

Two networks play against each other (see :mod:`deepspark.models.gan` for the losses written
out): the discriminator D learns to tell real digits from generated ones, the generator G learns
to make D call its samples real. The lesson trains :func:`~deepspark.models.gan.build_dcgan` with
``fit`` (the GAN's own Keras ``train_step``, on JAX or torch), and after every epoch draws the same
100 noise vectors into a sample grid (PNG, also logged to MLflow with the epoch's losses and
accuracies). Two measurements follow the game:

- **Mode collapse**: a logistic-regression digit classifier (trained on the real digits) labels
  the 100 samples; a generator that covers the data draws most of the 10 classes, a collapsed one
  draws few, however sharp its samples look.
- **D/G balance**: at the game's equilibrium D cannot tell real from fake, outputs 1/2 everywhere,
  and its loss is ``2 ln 2`` (G's ``ln 2``) with accuracy about 0.5 on each side; a D that wins
  outright (accuracy near 1) leaves G with little to learn from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from deepspark.errors import UserInputError
from deepspark.fundamentals._plotting import new_figure, save_figure

EPOCHS = 30
BATCH_SIZE = 64
LATENT_DIM = 32
LEARNING_RATE = 2e-4
SAMPLES = 100  # the fixed noise drawn after every epoch: a 10 x 10 grid
CONFIDENT = 0.5  # a sample the classifier gives one digit at least this probability
GRID_SCALE, GRID_GAP = 4, 2
EXPERIMENT = "deepspark-lessons"
EQUILIBRIUM_D_LOSS = 2.0 * math.log(2.0)
EQUILIBRIUM_G_LOSS = math.log(2.0)


def run(
    output_dir: Path, *, epochs: int = EPOCHS, rows: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Train a DCGAN on the digits, tracked in MLflow; write sample grids and three plots.

    Args:
        output_dir: Folder for the PNG files (exists).
        epochs: Passes over the digits.
        rows: Train on a seeded subset of this many digits (default: all 1,797).
        seed: Seed of the subset, the weights, the training noise and the sample noise.
    """
    from deepspark._backend import import_keras
    from deepspark.tracking.run import tracked_run

    if int(epochs) < 1:
        raise UserInputError(f"epochs must be at least 1. Received: epochs={epochs!r}")
    keras = import_keras()
    images, labels = _digits()
    classifier, classifier_accuracy = _digit_classifier(images, labels, seed)
    train = _training_images(images, rows, seed)
    with tracked_run(experiment=EXPERIMENT, run_name="learn-gan") as active:
        history, monitor = _train(keras, train, classifier, output_dir, epochs=epochs, seed=seed)
        figures = _figures(history, monitor.by_epoch, classifier_accuracy)
        figures.update(
            backend=keras.backend.backend(),
            epochs=int(epochs),
            rows=len(train),
            batch_size=BATCH_SIZE,
            latent_dim=LATENT_DIM,
            run_id=active.info.run_id,
            experiment=EXPERIMENT,
            grids=monitor.grids,
        )
        figures["plots"] = [
            _plot_losses(output_dir, figures),
            _plot_accuracies(output_dir, figures),
            _plot_quality(output_dir, figures),
        ]
        figures["notes"] = _log_plots_and_notes(output_dir, figures)
    return figures


def _train(keras, train: np.ndarray, classifier, output_dir: Path, *, epochs: int, seed: int):
    """Fit the DCGAN (its own ``train_step``); returns the Keras history and the monitor."""
    import mlflow

    from deepspark.models.gan import build_dcgan

    mlflow.log_params(
        {
            "epochs": epochs,
            "rows": len(train),
            "batch_size": BATCH_SIZE,
            "latent_dim": LATENT_DIM,
            "learning_rate": LEARNING_RATE,
            "seed": seed,
            "keras_backend": keras.backend.backend(),
        }
    )
    monitor = _make_monitor(keras, classifier, output_dir, seed)
    keras.utils.set_random_seed(seed)
    gan = build_dcgan((8, 8, 1), latent_dim=LATENT_DIM, seed=seed)
    gan.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=0.5))
    history = gan.fit(
        train, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0, callbacks=[monitor]
    )
    return history.history, monitor


def _log_plots_and_notes(output_dir: Path, figures: dict) -> str:
    """Write the notes, log plots and notes to the run's ``plots/``; returns the notes' path."""
    import mlflow

    notes = Path(output_dir) / "gan_notes.txt"
    notes.write_text(f"{figures['mode_collapse_note']}\n\n{figures['balance_note']}\n")
    for path in [*figures["plots"], str(notes)]:
        mlflow.log_artifact(path, "plots")
    mlflow.log_metrics(
        {
            "final_distinct_classes": figures["distinct_classes"],
            "classifier_test_accuracy": figures["classifier_test_accuracy"],
        }
    )
    return str(notes)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as ``(n, 8, 8, 1)`` float32 in [-1, 1] (ink 16 -> 1), and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32") / 16.0 * 2.0 - 1.0
    return images[..., None], digits.target


def _training_images(images: np.ndarray, rows: int | None, seed: int) -> np.ndarray:
    """A seeded subset, cut to whole batches so that one compiled step serves every batch."""
    order = np.random.default_rng(seed).permutation(len(images))
    count = len(images) if rows is None else min(int(rows), len(images))
    count = max(BATCH_SIZE, count // BATCH_SIZE * BATCH_SIZE)
    return images[order[:count]]


def _digit_classifier(images: np.ndarray, labels: np.ndarray, seed: int):
    """Logistic regression on the pixels; returns it and its accuracy on a held-out quarter."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    pixels = images.reshape(len(images), -1)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    classifier = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return classifier, float(classifier.score(x_test, y_test))


def _make_monitor(keras, classifier, output_dir: Path, seed: int):
    """A Keras callback: after each epoch, a sample grid, class counts and MLflow metrics."""
    import mlflow

    class SampleMonitor(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.grids: list[str] = []
            self.by_epoch: list[dict[str, Any]] = []

        def on_epoch_end(self, epoch, logs=None):
            samples = self.model.generate(SAMPLES, seed=seed)
            grid = write_grid(samples, Path(output_dir) / f"gan_samples_epoch_{epoch + 1:03d}.png")
            quality = sample_quality(classifier, samples)
            self.grids.append(grid)
            self.by_epoch.append(quality)
            metrics = {name: float(value) for name, value in (logs or {}).items()}
            metrics.update(
                {
                    name: quality[name]
                    for name in (
                        "distinct_classes",
                        "distinct_confident_classes",
                        "classifier_confidence",
                    )
                }
            )
            mlflow.log_metrics(metrics, step=epoch + 1)
            mlflow.log_artifact(grid, "samples")

    return SampleMonitor()


def write_grid(images: np.ndarray, path: Path, *, columns: int = 10) -> str:
    """Tile ``(n, h, w, 1)`` images in [-1, 1] into a grayscale PNG and return its path.

    Each image is enlarged ``GRID_SCALE`` times (nearest neighbour) with ``GRID_GAP`` grey
    pixels between tiles, so a 10 x 10 grid of 8 x 8 digits is 342 x 342 pixels.
    """
    from PIL import Image

    count, height, width = images.shape[:3]
    rows = math.ceil(count / columns)
    tile_h, tile_w = height * GRID_SCALE, width * GRID_SCALE
    canvas = np.full(
        (rows * tile_h + (rows + 1) * GRID_GAP, columns * tile_w + (columns + 1) * GRID_GAP),
        128,
        dtype=np.uint8,
    )
    pixels = np.clip((images[..., 0] + 1.0) * 127.5, 0, 255).astype(np.uint8)
    for index, image in enumerate(pixels):
        row, column = divmod(index, columns)
        top, left = GRID_GAP + row * (tile_h + GRID_GAP), GRID_GAP + column * (tile_w + GRID_GAP)
        canvas[top : top + tile_h, left : left + tile_w] = np.kron(
            image, np.ones((GRID_SCALE, GRID_SCALE), dtype=np.uint8)
        )
    Image.fromarray(canvas, mode="L").save(path)
    return str(path)


def sample_quality(classifier, samples: np.ndarray) -> dict[str, Any]:
    """What a digit classifier makes of generated samples: classes drawn and its confidence."""
    probabilities = classifier.predict_proba(samples.reshape(len(samples), -1))
    predicted = probabilities.argmax(axis=1)
    counts = np.bincount(predicted, minlength=10)
    shares = counts[counts > 0] / counts.sum()
    confident = probabilities.max(axis=1) >= CONFIDENT
    return {
        "distinct_classes": int((counts > 0).sum()),
        "distinct_confident_classes": int(len(np.unique(predicted[confident]))),
        "confident_share": float(confident.mean()),
        "class_counts": [int(count) for count in counts],
        "class_entropy_bits": float(-(shares * np.log2(shares)).sum()),
        "classifier_confidence": float(probabilities.max(axis=1).mean()),
    }


def _figures(history: dict, by_epoch: list[dict], classifier_accuracy: float) -> dict[str, Any]:
    series = {name: [float(value) for value in values] for name, values in history.items()}
    final = by_epoch[-1]
    figures: dict[str, Any] = {
        "d_loss": series["d_loss"][-1],
        "g_loss": series["g_loss"][-1],
        "d_accuracy_real": series["d_accuracy_real"][-1],
        "d_accuracy_fake": series["d_accuracy_fake"][-1],
        "equilibrium_d_loss": EQUILIBRIUM_D_LOSS,
        "equilibrium_g_loss": EQUILIBRIUM_G_LOSS,
        "distinct_classes": final["distinct_classes"],
        "distinct_confident_classes": final["distinct_confident_classes"],
        "confident_share": final["confident_share"],
        "class_counts": final["class_counts"],
        "class_entropy_bits": final["class_entropy_bits"],
        "max_class_entropy_bits": math.log2(10),
        "classifier_confidence": final["classifier_confidence"],
        "classifier_test_accuracy": classifier_accuracy,
        "distinct_classes_by_epoch": [epoch["distinct_classes"] for epoch in by_epoch],
        "classifier_confidence_by_epoch": [epoch["classifier_confidence"] for epoch in by_epoch],
        "distinct_confident_classes_by_epoch": [
            epoch["distinct_confident_classes"] for epoch in by_epoch
        ],
        **{f"{name}_by_epoch": values for name, values in series.items()},
    }
    figures["mode_collapse_note"] = _mode_collapse_note(figures)
    figures["balance_note"] = _balance_note(figures)
    return figures


def _mode_collapse_note(figures: dict) -> str:
    first = figures["distinct_classes_by_epoch"][0]
    return (
        "Mode collapse: a generator can fool the discriminator by drawing only a few kinds of "
        "digit well, since nothing in L_G rewards variety. Measured: a logistic regression "
        f"({figures['classifier_test_accuracy']:.0%} accurate on real digits) sees "
        f"{figures['distinct_classes']} of 10 classes in 100 samples after the last epoch "
        f"({first} after the first; class entropy {figures['class_entropy_bits']:.2f} of "
        f"{figures['max_class_entropy_bits']:.2f} bits, mean confidence "
        f"{figures['classifier_confidence']:.2f}); {figures['confident_share']:.0%} of the samples "
        f"are clear digits (probability >= {CONFIDENT}), covering "
        f"{figures['distinct_confident_classes']} classes. Few classes with high confidence is "
        "collapse; many classes with low confidence is a generator still learning what digits "
        "look like (noise is labelled almost at random)."
    )


def _balance_note(figures: dict) -> str:
    return (
        "D/G balance: at equilibrium D outputs 1/2 for every image, so L_D = 2 ln 2 = "
        f"{EQUILIBRIUM_D_LOSS:.3f}, L_G = ln 2 = {EQUILIBRIUM_G_LOSS:.3f} and D is right about "
        f"half the time. Last epoch: L_D = {figures['d_loss']:.3f}, L_G = {figures['g_loss']:.3f}"
        f", D calls {figures['d_accuracy_real']:.0%} of real digits real and "
        f"{figures['d_accuracy_fake']:.0%} of fakes fake. L_D far below 2 ln 2 with both "
        "accuracies near 100% means D wins and G's gradient fades (a smaller D or learning rate "
        "helps); L_D above it means G outpaces D, which then gives it no useful signal. Neither "
        "loss falls steadily as in supervised training: each is measured against a moving "
        "opponent."
    )


def _plot_losses(output_dir: Path, figures: dict) -> str:
    figure, axis = new_figure()
    epochs = np.arange(1, len(figures["d_loss_by_epoch"]) + 1)
    axis.plot(epochs, figures["d_loss_by_epoch"], "o-", label="discriminator L_D")
    axis.plot(epochs, figures["g_loss_by_epoch"], "o-", label="generator L_G")
    axis.axhline(EQUILIBRIUM_D_LOSS, color="tab:blue", linestyle=":", label="2 ln 2")
    axis.axhline(EQUILIBRIUM_G_LOSS, color="tab:orange", linestyle=":", label="ln 2")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.legend()
    return save_figure(figure, output_dir, "gan_losses.png")


def _plot_accuracies(output_dir: Path, figures: dict) -> str:
    figure, axis = new_figure()
    epochs = np.arange(1, len(figures["d_loss_by_epoch"]) + 1)
    axis.plot(epochs, figures["d_accuracy_real_by_epoch"], "o-", label="D on real digits")
    axis.plot(epochs, figures["d_accuracy_fake_by_epoch"], "o-", label="D on generated digits")
    axis.axhline(0.5, color="grey", linestyle=":", label="equilibrium (1/2)")
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("epoch")
    axis.set_ylabel("discriminator accuracy")
    axis.legend()
    return save_figure(figure, output_dir, "gan_balance.png")


def _plot_quality(output_dir: Path, figures: dict) -> str:
    figure, axes = new_figure(rows=1, columns=2, size=(10.0, 4.0))
    epochs = np.arange(1, len(figures["distinct_classes_by_epoch"]) + 1)
    axes[0, 0].plot(epochs, figures["distinct_classes_by_epoch"], "o-", label="all samples")
    axes[0, 0].plot(
        epochs,
        figures["distinct_confident_classes_by_epoch"],
        "s-",
        label=f"samples with probability >= {CONFIDENT}",
    )
    axes[0, 0].legend(loc="lower right", fontsize=8)
    axes[0, 0].set_ylim(0, 10.5)
    axes[0, 0].set_xlabel("epoch")
    axes[0, 0].set_ylabel("digit classes in 100 samples")
    confidence = axes[0, 0].twinx()
    confidence.plot(epochs, figures["classifier_confidence_by_epoch"], color="tab:orange")
    confidence.set_ylim(0, 1.05)
    confidence.set_ylabel("classifier confidence (orange)")
    axes[0, 1].bar(range(10), figures["class_counts"])
    axes[0, 1].set_xticks(range(10))
    axes[0, 1].set_xlabel("digit the classifier sees")
    axes[0, 1].set_ylabel("samples (last epoch)")
    return save_figure(figure, output_dir, "gan_mode_collapse.png")
