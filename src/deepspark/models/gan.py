"""A DCGAN whose adversarial training is a Keras 3 ``train_step``: ``gan.fit(images)`` trains it.

The generator maps noise ``z`` to an image through a Dense layer, a Reshape and a stack of
strided ``Conv2DTranspose`` layers ending in ``tanh`` (pixels in [-1, 1]); the discriminator is a
stack of strided ``Conv2D`` layers with LeakyReLU ending in one logit ``l = D(x)`` (no sigmoid:
the losses below take logits, which is numerically safe).

With ``sigma`` the logistic function, binary cross-entropy on a logit is
``BCE(1, l) = -log sigma(l) = softplus(-l)`` and ``BCE(0, l) = -log(1 - sigma(l)) = softplus(l)``:

- discriminator: ``L_D = mean softplus(-D(x)) + mean softplus(D(G(z)))`` -- call real images
  real (label 1) and generated ones fake (label 0); ``G`` is held fixed.
- generator (non-saturating): ``L_G = mean softplus(-D(G(z)))`` -- make D call the fakes real;
  ``D`` is held fixed. Minimising ``log(1 - D(G(z)))`` instead (the minimax form) gives G almost no
  gradient early on, when D rejects its samples with confidence.

Both players take one step per batch from the same parameters (simultaneous updates, as in the
TensorFlow DCGAN tutorial), so one optimizer updates both and the step has the shape of Keras'
own: on JAX a stateless ``train_step(state, data)`` (gradients with ``jax.value_and_grad``), on
torch a stateful ``train_step(data)`` (``backward()``); the losses are written once, in
:meth:`GAN.adversarial_losses`, for both.

Example::

    gan = build_dcgan((8, 8, 1), latent_dim=32)
    gan.compile()  # Adam(2e-4, beta_1=0.5), the DCGAN paper's setting
    gan.fit(images_in_minus_one_to_one, batch_size=64, epochs=20)
    samples = gan.generate(16, seed=0)  # (16, 8, 8, 1) NumPy, in [-1, 1]
"""

from __future__ import annotations

import numpy as np

from deepspark._backend import import_keras
from deepspark.errors import UserInputError

keras = import_keras()
layers = keras.layers
ops = keras.ops

LEAKY_SLOPE = 0.2
DEFAULT_LEARNING_RATE = 2e-4
DEFAULT_BETA_1 = 0.5


def discriminator_loss(real_logits, fake_logits):
    """``mean softplus(-D(x)) + mean softplus(D(G(z)))``: BCE with real = 1, fake = 0."""
    return ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))


def generator_loss(fake_logits):
    """Non-saturating ``mean softplus(-D(G(z)))`` = ``-mean log D(G(z))``: BCE with fake = 1."""
    return ops.mean(ops.softplus(-fake_logits))


@keras.saving.register_keras_serializable(package="deepspark")
class GAN(keras.Model):
    """A generator and a discriminator trained against each other by ``fit``.

    ``fit(images)`` takes real images (already scaled like the generator's output, [-1, 1] for a
    ``tanh`` generator) and logs per epoch ``d_loss``, ``g_loss``, ``d_accuracy_real`` (share of
    real images D calls real) and ``d_accuracy_fake`` (share of fakes D calls fake). Calling the
    model on noise returns generated images.

    Args:
        generator: Maps ``(batch, latent_dim)`` noise to images.
        discriminator: Maps images to ``(batch, 1)`` logits.
        latent_dim: Size of the noise vector.
        seed: Seed of the noise drawn in each training step.
    """

    def __init__(self, generator, discriminator, *, latent_dim: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.seed = int(seed)
        self.noise_seed = keras.random.SeedGenerator(self.seed)
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("d_loss", "g_loss", "d_accuracy_real", "d_accuracy_fake")
        }
        # Both networks are built; without this, fit() would build the GAN by calling it on a
        # batch of images, but it takes noise.
        self.built = True

    def compile(self, optimizer=None, **kwargs) -> None:
        """Compile with ``optimizer`` (default ``Adam(2e-4, beta_1=0.5)``); no loss is needed."""
        if optimizer is None:
            optimizer = keras.optimizers.Adam(DEFAULT_LEARNING_RATE, beta_1=DEFAULT_BETA_1)
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def metrics(self):
        # Listed here so that fit() resets them at the start of every epoch.
        return list(self.trackers.values())

    def call(self, noise, training=False):
        return self.generator(noise, training=training)

    def generate(self, count: int, *, seed: int = 0) -> np.ndarray:
        """``count`` images from seeded noise (the same seed gives the same noise), as NumPy."""
        noise = np.random.default_rng(seed).normal(size=(count, self.latent_dim))
        images = self.generator(noise.astype("float32"), training=False)
        return np.asarray(ops.convert_to_numpy(images))

    def adversarial_losses(self, real) -> dict:
        """One forward pass of both players on a batch of real images.

        Returns ``d_loss``, ``g_loss``, their sum ``total`` (whose gradient is ``dL_D/dθ_D``
        for the discriminator's weights and ``dL_G/dθ_G`` for the generator's: each loss is
        cut off from the other player's weights) and the discriminator's accuracies.
        """
        noise = keras.random.normal((ops.shape(real)[0], self.latent_dim), seed=self.noise_seed)
        fake = self.generator(noise, training=True)
        real_logits = self.discriminator(real, training=True)
        # D's step sees the fakes as constants ...
        fake_logits = self.discriminator(ops.stop_gradient(fake), training=True)
        # ... and G's step sees D's weights as constants.
        frozen_weights = [
            ops.stop_gradient(v.value) for v in self.discriminator.trainable_variables
        ]
        fooled_logits, _ = self.discriminator.stateless_call(
            frozen_weights,
            [v.value for v in self.discriminator.non_trainable_variables],
            fake,
            training=True,
        )
        d_loss = discriminator_loss(real_logits, fake_logits)
        g_loss = generator_loss(fooled_logits)
        return {
            "total": d_loss + g_loss,
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_accuracy_real": ops.mean(ops.cast(real_logits > 0, "float32")),
            "d_accuracy_fake": ops.mean(ops.cast(fake_logits < 0, "float32")),
        }

    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._stateless_train_step(*args)
        return self._stateful_train_step(*args)

    def _stateless_train_step(self, state, data):
        """JAX: a pure function of the state, returning the new state (Keras jit-compiles it)."""
        import jax

        trainable, non_trainable, optimizer_state, metrics_state = state
        real = _real_images(data)

        def total_loss(trainable_values):
            mapping = [
                *zip(self.trainable_variables, trainable_values, strict=True),
                *zip(self.non_trainable_variables, non_trainable, strict=True),
            ]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                losses = self.adversarial_losses(real)
            updated = [scope.get_current_value(v) for v in self.non_trainable_variables]
            return losses["total"], (losses, updated)

        gradient_fn = jax.value_and_grad(total_loss, has_aux=True)
        (_, (losses, non_trainable)), gradients = gradient_fn(trainable)
        trainable, optimizer_state = self.optimizer.stateless_apply(
            optimizer_state, gradients, trainable
        )
        mapping = list(zip(self.metrics_variables, metrics_state, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._update_trackers(losses)
        metrics_state = [scope.get_current_value(v) for v in self.metrics_variables]
        return logs, (trainable, non_trainable, optimizer_state, metrics_state)

    def _stateful_train_step(self, data):
        """torch: variables change in place; ``backward()`` fills each weight's ``.grad``."""
        import torch

        self.zero_grad()
        losses = self.adversarial_losses(_real_images(data))
        losses["total"].backward()
        weights = list(self.trainable_variables)
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in weights], weights)
        return self._update_trackers(losses)

    def _update_trackers(self, losses: dict) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "latent_dim": self.latent_dim,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        for part in ("generator", "discriminator"):
            config[part] = keras.saving.deserialize_keras_object(config[part])
        return cls(**config)


def _real_images(data):
    """``fit(x)`` hands ``x``; ``fit(x, y)`` or a dataset of pairs hands ``(x, y)``."""
    return data[0] if isinstance(data, (tuple, list)) else data


def build_dcgan(
    image_shape: tuple[int, int, int] = (8, 8, 1),
    *,
    latent_dim: int = 32,
    generator_filters: tuple[int, ...] = (32,),
    discriminator_filters: tuple[int, ...] = (32, 64),
    seed: int = 0,
) -> GAN:
    """Build an (uncompiled) DCGAN for square images of side divisible by ``2**len(filters)``.

    Args:
        image_shape: ``(height, width, channels)`` of the real images, scaled to [-1, 1].
        latent_dim: Size of the noise vector ``z``.
        generator_filters: Filters of each stride-2 ``Conv2DTranspose`` (each doubles the side),
            after a Dense + Reshape to ``side / 2**len(generator_filters)`` and ``2 * first``
            channels; a last ``Conv2DTranspose`` gives ``channels`` outputs with ``tanh``.
        discriminator_filters: Filters of each stride-2 ``Conv2D`` (each halves the side),
            followed by LeakyReLU(0.2); then Flatten and a Dense logit.
        seed: Seed of the noise drawn in each training step (seed the initial weights with
            ``keras.utils.set_random_seed`` before building).

    Returns:
        A :class:`GAN`; ``compile()`` then ``fit(images)`` trains it.

    Raises:
        UserInputError: For a shape, size or filter list that cannot build the two networks.
    """
    height, width, channels = _check(image_shape, latent_dim, generator_filters)
    _check_filters("discriminator_filters", discriminator_filters)
    start = height // 2 ** len(generator_filters)
    noise = keras.Input((latent_dim,), name="noise")
    tensor = layers.Dense(start * start * 2 * generator_filters[0], use_bias=False)(noise)
    tensor = layers.BatchNormalization()(tensor)
    tensor = layers.LeakyReLU(LEAKY_SLOPE)(tensor)
    tensor = layers.Reshape((start, start, 2 * generator_filters[0]))(tensor)
    for count in generator_filters:
        tensor = layers.Conv2DTranspose(count, 4, strides=2, padding="same", use_bias=False)(tensor)
        tensor = layers.BatchNormalization()(tensor)
        tensor = layers.LeakyReLU(LEAKY_SLOPE)(tensor)
    image = layers.Conv2DTranspose(channels, 3, padding="same", activation="tanh")(tensor)
    generator = keras.Model(noise, image, name="generator")

    inputs = keras.Input((height, width, channels), name="image")
    tensor = inputs
    for count in discriminator_filters:
        tensor = layers.Conv2D(count, 3, strides=2, padding="same")(tensor)
        tensor = layers.LeakyReLU(LEAKY_SLOPE)(tensor)
    logit = layers.Dense(1, name="logit")(layers.Flatten()(tensor))
    discriminator = keras.Model(inputs, logit, name="discriminator")
    return GAN(generator, discriminator, latent_dim=latent_dim, seed=seed, name="dcgan")


def _check(image_shape, latent_dim, generator_filters) -> tuple[int, int, int]:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise UserInputError(
            "image_shape must be (height, width, channels) of positive sizes. "
            f"Received: image_shape={image_shape!r}"
        )
    height, width, channels = (int(size) for size in image_shape)
    _check_filters("generator_filters", generator_filters)
    scale = 2 ** len(generator_filters)
    if height != width or height % scale:
        raise UserInputError(
            f"The generator needs square images whose side divides by 2**len(generator_filters)"
            f" = {scale}; use fewer generator_filters or resize the images. "
            f"Received: image_shape={image_shape!r}"
        )
    if int(latent_dim) < 1:
        raise UserInputError(f"latent_dim must be positive. Received: latent_dim={latent_dim!r}")
    return height, width, channels


def _check_filters(name: str, filters) -> None:
    if not filters or any(int(count) < 1 for count in filters):
        raise UserInputError(f"{name} must be positive filter counts. Received: {name}={filters!r}")
