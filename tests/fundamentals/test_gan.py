"""The DCGAN builder and the ``gan`` lesson: a custom Keras ``train_step`` trains both players.

The training test is in the backend-parity set: `make test` runs it on JAX (stateless
``train_step(state, data)``) and again on torch (stateful ``train_step(data)``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from deepspark.errors import UserInputError
from deepspark.fundamentals import TOPICS
from deepspark.fundamentals._lesson_gan import _digits
from deepspark.fundamentals._lesson_gan import run as run_gan_lesson
from deepspark.models.gan import GAN, build_dcgan, discriminator_loss, generator_loss


def test_adversarial_losses_are_binary_crossentropy_on_logits():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(2, 16)).astype("float32") * 3
    sigmoid = lambda logits: 1 / (1 + np.exp(-logits.astype("float64")))  # noqa: E731
    expected_d = -np.mean(np.log(sigmoid(real))) - np.mean(np.log(1 - sigmoid(fake)))
    expected_g = -np.mean(np.log(sigmoid(fake)))  # non-saturating: -log D(G(z))
    d_loss = keras.ops.convert_to_numpy(discriminator_loss(real, fake))
    g_loss = keras.ops.convert_to_numpy(generator_loss(fake))
    assert float(d_loss) == pytest.approx(expected_d, rel=1e-5)
    assert float(g_loss) == pytest.approx(expected_g, rel=1e-5)
    # D output 1/2 everywhere (logit 0) is the equilibrium: 2 ln 2 and ln 2.
    zeros = np.zeros(4, dtype="float32")
    assert float(discriminator_loss(zeros, zeros)) == pytest.approx(2 * math.log(2))
    assert float(generator_loss(zeros)) == pytest.approx(math.log(2))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.grad of the stateless losses")
def test_each_player_gets_only_the_gradient_of_its_own_loss():
    import jax

    keras.utils.set_random_seed(0)
    gan = build_dcgan((8, 8, 1), latent_dim=8, seed=0)
    real = _digits()[0][:16]
    variables = gan.trainable_variables
    values = [v.value for v in variables]
    constants = [(v, v.value) for v in gan.non_trainable_variables]

    def losses(trainable_values):
        mapping = [*zip(variables, trainable_values, strict=True), *constants]
        with keras.StatelessScope(state_mapping=mapping):
            found = gan.adversarial_losses(real)
        return keras.ops.stack([found["total"], found["d_loss"], found["g_loss"]])

    # One compiled Jacobian: row 0 the gradient of the total, row 1 of L_D, row 2 of L_G.
    jacobian = [np.asarray(rows) for rows in jax.jit(jax.jacrev(losses))(values)]
    total, d_only, g_only = ([rows[i] for rows in jacobian] for i in range(3))
    is_discriminator = [
        any(v is w for w in gan.discriminator.trainable_variables) for v in variables
    ]
    for index, of_discriminator in enumerate(is_discriminator):
        own, other = (d_only, g_only) if of_discriminator else (g_only, d_only)
        np.testing.assert_allclose(total[index], own[index], rtol=1e-5, atol=1e-7)
        assert not np.any(other[index]), variables[index].path  # cut off from the other loss
    assert any(np.any(g) for g in g_only) and any(np.any(g) for g in d_only)


@pytest.mark.parity
def test_gan_fit_trains_both_players_on_this_backend():
    images = _digits()[0][:128]
    gan = build_dcgan((8, 8, 1), latent_dim=32, seed=0)
    assert gan.generator.output_shape == (None, 8, 8, 1)
    assert gan.discriminator.output_shape == (None, 1)
    before = {
        part: [np.array(v.numpy()) for v in getattr(gan, part).trainable_variables]
        for part in ("generator", "discriminator")
    }
    gan.compile()
    history = gan.fit(images, batch_size=64, epochs=2, verbose=0).history
    assert set(history) == {"d_loss", "g_loss", "d_accuracy_real", "d_accuracy_fake"}
    for name, values in history.items():
        assert len(values) == 2 and all(np.isfinite(values)), name
    assert all(0.0 <= value <= 1.0 for value in history["d_accuracy_real"])
    for part, weights in before.items():
        after = [np.array(v.numpy()) for v in getattr(gan, part).trainable_variables]
        assert any(not np.allclose(old, new) for old, new in zip(weights, after, strict=True))
    assert int(gan.optimizer.iterations.numpy()) == 4  # 2 batches x 2 epochs, one step each
    samples = gan.generate(5, seed=1)
    assert samples.shape == (5, 8, 8, 1)
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    np.testing.assert_allclose(gan.generate(5, seed=1), samples)
    rebuilt = GAN.from_config(gan.get_config())
    assert rebuilt.latent_dim == 32 and rebuilt.generator.output_shape == (None, 8, 8, 1)


def test_build_dcgan_rejects_a_side_the_generator_cannot_reach():
    with pytest.raises(
        UserInputError,
        match=r"divides by 2\*\*len\(generator_filters\) = 4.*"
        r"Received: image_shape=\(10, 10, 1\)",
    ):
        build_dcgan((10, 10, 1), generator_filters=(32, 16))
    with pytest.raises(UserInputError, match="latent_dim must be positive. Received: latent_dim=0"):
        build_dcgan(latent_dim=0)


def test_gan_lesson_logs_each_epoch_to_mlflow_and_the_output_folder(workdir):
    assert "gan" in TOPICS
    output = workdir / "lesson"
    output.mkdir()
    figures = run_gan_lesson(output, epochs=2, rows=64)
    json.dumps(figures, allow_nan=False)
    for key in ("d_loss", "g_loss", "d_accuracy_real", "d_accuracy_fake", "distinct_classes"):
        assert math.isfinite(figures[key]), key
    assert 1 <= figures["distinct_classes"] <= 10 and sum(figures["class_counts"]) == 100
    assert figures["classifier_test_accuracy"] > 0.9
    assert figures["rows"] == 64 and figures["epochs"] == 2
    assert len(figures["d_loss_by_epoch"]) == 2 == len(figures["distinct_classes_by_epoch"])
    assert [Path(grid).name for grid in figures["grids"]] == [
        "gan_samples_epoch_001.png",
        "gan_samples_epoch_002.png",
    ]
    for grid in figures["grids"]:
        with Image.open(grid) as image:  # 10 x 10 tiles of 8 x 8 digits x4, 2-pixel gaps
            assert image.size == (342, 342) and image.mode == "L"
    for plot in figures["plots"]:
        assert Path(plot).parent == output and Path(plot).read_bytes()[:4] == b"\x89PNG"
    assert "2 ln 2" in figures["balance_note"] and "Mode collapse" in figures["mode_collapse_note"]
    assert Path(figures["notes"]).read_text().startswith("Mode collapse")

    client = mlflow.MlflowClient()
    run = client.get_run(figures["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["keras_backend"] == keras.backend.backend()
    history = client.get_metric_history(run.info.run_id, "d_loss")
    assert [point.step for point in history] == [1, 2]
    assert history[-1].value == pytest.approx(figures["d_loss"])
    assert run.data.metrics["distinct_classes"] == figures["distinct_classes"]
    samples = [item.path for item in client.list_artifacts(run.info.run_id, "samples")]
    assert samples == ["samples/gan_samples_epoch_001.png", "samples/gan_samples_epoch_002.png"]
    plots = {Path(item.path).name for item in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"gan_losses.png", "gan_balance.png", "gan_mode_collapse.png", "gan_notes.txt"}


def test_gan_lesson_needs_an_epoch(tmp_path):
    with pytest.raises(UserInputError, match="epochs must be at least 1. Received: epochs=0"):
        run_gan_lesson(tmp_path, epochs=0)
