"""DL 10c - Generative adversarial networks: a DCGAN learns to draw digits.

The course writes a DCGAN with a custom training loop: a generator (Dense, Reshape, strided
``Conv2DTranspose``, ``tanh``) against a convolutional discriminator, each with its own loss.
``deepspark.models.gan.build_dcgan`` is that pair as a Keras 3 model with its own
``train_step`` (stateless on JAX, ``backward()`` on torch), so ``gan.fit(images)`` trains it on
either backend. This lab trains it on scikit-learn's 8x8 digits (offline; ``--download`` uses
MNIST, resized to 8x8), logs the losses and a sample grid per epoch to MLflow, and writes the grids.

The whole lesson, with the mode-collapse and balance plots: ``deepspark learn gan --output gan/``.

Run: ``python examples/dl10c_gan.py [--tiny] [--download] [--output DIR]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def digits(download: bool):
    """Digits as (n, 8, 8, 1) float32 in [-1, 1]: the generator's ``tanh`` range."""
    import numpy as np

    if download:
        import keras

        (images, _), _ = keras.datasets.mnist.load_data()
        images = (
            keras.ops.convert_to_numpy(
                keras.ops.image.resize(images[..., None].astype("float32"), (8, 8))
            )[..., 0]
            / 255.0
        )
    else:
        from sklearn.datasets import load_digits

        images = load_digits().images / 16.0
    return (images[..., None] * 2.0 - 1.0).astype(np.float32)


def write_grid(samples, path: Path, columns: int = 8) -> str:
    """Samples in [-1, 1] as one PNG grid, enlarged 4x."""
    import numpy as np
    from PIL import Image

    pixels = ((samples[..., 0] + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    rows = [
        np.concatenate(list(pixels[i : i + columns]), axis=1)
        for i in range(0, len(pixels), columns)
    ]
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(path)
    return str(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 10c: a DCGAN on digits.")
    parser.add_argument("--tiny", action="store_true", help="256 digits, 1 epoch")
    parser.add_argument("--download", action="store_true", help="MNIST instead of sklearn digits")
    parser.add_argument("--output", default="lab-output/dl10c")
    args = parser.parse_args(argv)

    import keras
    import mlflow
    import numpy as np

    from deepspark.models.gan import build_dcgan

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    images = digits(args.download)
    if args.tiny:
        images = images[:256]
    epochs = 1 if args.tiny else 30

    keras.utils.set_random_seed(0)
    gan = build_dcgan((8, 8, 1), latent_dim=32, seed=0)
    gan.compile(optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))  # the DCGAN paper's setting

    grids: list[str] = []

    class SampleGrid(keras.callbacks.Callback):
        """After each epoch: 32 samples from fixed noise, to watch the digits appear."""

        def on_epoch_end(self, epoch, logs=None):
            samples = gan.generate(32, seed=0)
            grids.append(write_grid(samples, output / f"samples_epoch_{epoch + 1:03d}.png"))
            mlflow.log_artifact(grids[-1], "samples")
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch + 1)

    mlflow.set_experiment("dl10c-gan")
    with mlflow.start_run(run_name="dl10c-dcgan") as run:
        mlflow.log_params({"epochs": epochs, "rows": len(images), "latent_dim": 32})
        history = gan.fit(images, batch_size=64, epochs=epochs, callbacks=[SampleGrid()], verbose=0)
    losses = {name: [float(v) for v in values] for name, values in history.history.items()}
    figures = {
        "lab": "DL10c",
        "run_id": run.info.run_id,
        "backend": keras.backend.backend(),
        "rows": len(images),
        "epochs": epochs,
        "losses": losses,  # discriminator and generator loss per epoch
        # At the equilibrium D cannot tell: d_loss -> 2 ln 2 = 1.386, g_loss -> ln 2 = 0.693.
        "equilibrium_d_loss": 2 * float(np.log(2.0)),
        "sample_grids": grids,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
