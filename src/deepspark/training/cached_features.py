"""The head phase of a transfer run on features of the frozen base, computed once.

With the base frozen and no augmentation, every epoch would run the same forward pass of the
base over the same images: the expensive part of an epoch, with the same result each time. So
the transfer model is cut in two at its pooling layer (``split_at_pool``)::

    features:  uint8 image -> preprocess_input -> base (frozen) -> global average pooling
    head:      pooled features -> dropout -> probability

``base_features`` runs the first part once over each split (compiled once, a chunk of images at
a time, ``ImageFiles`` decoded a chunk at a time), and ``fit_head_on_features`` trains the
second part on the result with the run's own callbacks. The head's layers are the transfer
model's own layers (shared variables, one optimizer), so training the head trains the whole
model: deepspark's callbacks see the whole network (``WholeModelCallback``), so checkpoints,
early stopping's best weights and the logged model are the whole network, raw images in, as
with any other run; only the data each step sees differs.

With augmentation, a trainable base (fine-tuning) or augmentation layers in the model the
features would change from epoch to epoch: ``split_at_pool`` then returns ``None`` and the
phase trains the whole model as usual.

Distributed runs do the same on every rank (``distributed.worker``): each rank computes the
features of its own shard once (``head_on_features``) and trains the head with the distributed
optimizer, its callbacks seeing the whole network.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np

from deepspark._backend import import_keras

keras = import_keras()
logger = logging.getLogger("deepspark.training")

POOL_LAYER, DROPOUT_LAYER, OUTPUT_LAYER = "pool", "head_dropout", "probability"
# The features of every split are held in memory up to this many bytes (float32); above it the
# phase trains the whole model, decoding and forwarding images every epoch.
FEATURE_MEMORY_BYTES = 2 * 2**30
# "0": never cache (the base runs every epoch): for measuring what the cache saves.
CACHE_ENV = "DEEPSPARK_FEATURE_CACHE"


def split_at_pool(model) -> tuple[keras.Model, keras.Model] | None:
    """``(features, head)`` of a transfer model whose feature part is fixed, else ``None``.

    The feature part is fixed when none of its layers has trainable weights (the base is
    frozen) and none is a random augmentation layer (those differ from epoch to epoch).
    """
    names = {layer.name for layer in model.layers}
    if not {POOL_LAYER, DROPOUT_LAYER, OUTPUT_LAYER} <= names:
        return None
    features = keras.Model(model.inputs, model.get_layer(POOL_LAYER).output, name="features")
    for layer in features.layers:
        if layer.trainable_weights or _is_random(layer):
            return None
    pooled = keras.Input(features.outputs[0].shape[1:], name="features")
    tensor = model.get_layer(DROPOUT_LAYER)(pooled)
    outputs = model.get_layer(OUTPUT_LAYER)(tensor)
    return features, keras.Model(pooled, outputs, name="head")


def _is_random(layer) -> bool:
    """Whether ``layer`` (or a layer inside it) is a random preprocessing layer (augmentation)."""
    inner = getattr(layer, "layers", None) or []
    if any(_is_random(sublayer) for sublayer in inner):
        return True
    return type(layer).__name__.startswith("Random") or layer.name == "augmentation"


def feature_bytes(features: keras.Model, rows: int) -> int:
    """The float32 bytes of ``rows`` feature vectors of ``features``."""
    return rows * int(np.prod(features.outputs[0].shape[1:])) * 4


def base_features(features: keras.Model, inputs) -> np.ndarray:
    """``features`` over ``inputs`` (uint8 pixels or ``ImageFiles``), in chunks of about a
    million pixels, compiled once (``models.inference.predict_arrays``)."""
    from deepspark.models.inference import predict_arrays

    return np.asarray(predict_arrays(features, inputs), dtype="float32")


def cached_split_features(features: keras.Model, inputs: dict) -> dict[str, np.ndarray] | None:
    """The features of each split in ``inputs`` (``None`` when they would not fit in
    ``FEATURE_MEMORY_BYTES``)."""
    rows = sum(len(part) for part in inputs.values())
    if feature_bytes(features, rows) > FEATURE_MEMORY_BYTES:
        logger.info(
            "base features of %d images would take more than %d MB: the base runs every epoch",
            rows,
            FEATURE_MEMORY_BYTES // 2**20,
        )
        return None
    started = time.perf_counter()
    cached = {name: base_features(features, part) for name, part in inputs.items()}
    seconds = time.perf_counter() - started
    logger.info(
        "frozen base: features of %d images computed once in %.1f s (%.0f images/s); the head "
        "trains on them",
        rows,
        seconds,
        rows / max(seconds, 1e-9),
    )
    return cached


class WholeModelCallback(keras.callbacks.Callback):
    """Runs ``callback`` as if ``model`` (the whole transfer network) were being fit, while the
    head is: checkpoints save, and early stopping keeps and restores, the whole network's
    weights; a callback that stops training stops the head's fit.

    The head's variables are the whole model's own, so reading the whole model after the head's
    state is synced (``self.model`` on JAX syncs it) sees the trained values.
    """

    def __init__(self, callback, model):
        super().__init__()
        self.callback = callback
        self.whole = model
        self.async_safe = getattr(callback, "async_safe", False)

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(self.whole)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def _forward(self, hook: str, *args) -> None:
        trainer = self.model  # on JAX: attaches the head's training state to the variables
        getattr(self.callback, hook)(*args)
        if self.whole.stop_training:
            trainer.stop_training = True

    def on_train_begin(self, logs=None):
        self.whole.stop_training = False
        self._forward("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._forward("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._forward("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._forward("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.callback.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.callback.on_train_batch_end(batch, logs)
        if self.whole.stop_training:
            self._model.stop_training = True

    def on_test_begin(self, logs=None):
        self.callback.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.callback.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.callback.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.callback.on_test_batch_end(batch, logs)


def compile_head(head, model) -> None:
    """Compile ``head`` as ``model`` is compiled: the same optimizer object (the head's variables
    are the model's own, so its slots are the ones checkpoints save and a resume restores), the
    same loss and fresh metrics of the same kinds."""
    metrics = model.get_compile_config().get("metrics")
    head.compile(
        optimizer=model.optimizer,
        loss=model.loss,
        metrics=keras.saving.deserialize_keras_object(metrics) if metrics else None,
    )


def head_on_features(model, inputs: dict) -> tuple[keras.Model, dict[str, np.ndarray]] | None:
    """``(head, features)``: ``model``'s compiled head and its frozen base's features of each
    split in ``inputs`` (uint8 pixels or ``ImageFiles``), computed once; ``None`` when the
    features are not fixed (augmentation, a trainable base), would not fit in memory, or
    ``$DEEPSPARK_FEATURE_CACHE`` is ``0``. Distributed ranks call it on their own shards."""
    if os.environ.get(CACHE_ENV, "1") == "0":
        return None
    parts = split_at_pool(model)
    if parts is None:
        return None
    features, head = parts
    cached = cached_split_features(features, inputs)
    if cached is None:
        return None
    compile_head(head, model)
    return head, cached


def whole_model_callbacks(callbacks, model) -> list:
    """``callbacks`` for the head's fit, each seeing ``model`` (``WholeModelCallback``)."""
    return [WholeModelCallback(callback, model) for callback in callbacks]


def fit_head_on_features(model, prepared, *, config, callbacks, state, first_callbacks=()):
    """Train ``model``'s head on its frozen base's features (the head phase of a transfer run),
    or return ``None`` when the features are not fixed or would not fit in memory (the caller
    then trains the whole model).

    Args:
        model: The compiled transfer model (fresh or resumed from a checkpoint).
        prepared: The run's data (uint8 pixels or ``ImageFiles`` per split).
        config: The phase's settings (epochs, batch size).
        callbacks: ``fit.default_callbacks``' result for the phase: each sees the whole model.
        state: The checkpoint state being resumed, if any.
        first_callbacks: Callbacks that see the head's fit itself (timers).

    Returns:
        ``fit.run_fit``'s ``FitOutcome`` with ``model`` the whole network, or ``None``.
    """
    from deepspark.training import fit as fit_module

    found = head_on_features(model, {name: prepared.inputs[name] for name in ("train", "val")})
    if found is None:
        return None
    head, cached = found
    wrapped = dataclasses.replace(
        callbacks, callbacks=whole_model_callbacks(callbacks.callbacks, model)
    )
    outcome = fit_module.run_fit(
        head,
        config,
        train=(cached["train"], prepared.targets["train"]),
        validation=(cached["val"], prepared.targets["val"]),
        callbacks=wrapped,
        state=state,
        first_callbacks=first_callbacks,
    )
    outcome.model = model
    return outcome
