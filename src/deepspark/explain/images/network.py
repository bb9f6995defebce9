"""An image model's network seen the ways explainers need it, built from its own layers.

Image models take uint8 pixels, so the network cannot be differentiated with respect to them
(calling it on floats casts them back to integers: the gradient is zero). Two views share the
model's layers and weights (nothing is copied or retrained):

- ``pixel_network``: float pixels (0-255, the same units) -> one probability per class. The
  graph is rebuilt on a float input with every layer reused, so whatever the first layer is
  (deepspark's ``Rescaling``, a transfer model's ``to_float``, the zoo's ``ImagenetPreprocess``)
  it receives floats and stays differentiable.
- ``split_at_layer``: ``features`` (uint8 images -> a layer's activations) and ``head``
  (activations -> one score per class) for Grad-CAM. The layer may sit inside a nested network
  (a transfer model's pretrained ``base``); both halves are then composed across the nesting.
  Scores are logits when the last layer is a Dense with a sigmoid or softmax (Grad-CAM's
  pre-softmax scores, which do not saturate), else probabilities.

Columns are always one per class: a binary model's one output ``p`` (or logit ``z``) becomes
``[1 - p, p]`` (or ``[-z, z]``), so class position ``c`` is column ``c`` everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from deepspark._backend import import_keras
from deepspark.errors import UserInputError

keras = import_keras()
ops = keras.ops

SPATIAL_RANK = 4  # (batch, height, width, channels)
_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
_SHOWN_LAYERS = 8


class _ClassColumns(keras.layers.Layer):
    """(rows, 1) binary output -> (rows, 2) columns: ``[1 - p, p]`` or, for logits, ``[-z, z]``."""

    def __init__(self, *, logits: bool, **kwargs):
        super().__init__(**kwargs)
        self.logits = logits

    def call(self, inputs):
        other = -inputs if self.logits else 1.0 - inputs
        return ops.concatenate([other, inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


class _Logits(keras.layers.Layer):
    """The pre-activation output of a Dense layer, with that layer's own weights."""

    def __init__(self, dense, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.dense.kernel)
        if self.dense.bias is not None:
            outputs = outputs + self.dense.bias
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.dense.units)


def _per_class(tensor, *, binary: bool, logits: bool):
    return _ClassColumns(logits=logits)(tensor) if binary else tensor


def pixel_network(keras_model, *, binary: bool):
    """The model as a function of float pixels (0-255): ``(rows, H, W, C)`` -> class
    probabilities ``(rows, classes)``, sharing the model's layers and weights."""
    pixels = keras.Input(keras_model.inputs[0].shape[1:], dtype="float32", name="pixels")
    rebuilt = keras.models.clone_model(
        keras_model, input_tensors=pixels, clone_function=lambda layer: layer
    )
    outputs = _per_class(rebuilt.outputs[0], binary=binary, logits=False)
    return keras.Model(pixels, outputs, name=f"{keras_model.name}_pixels")


@dataclasses.dataclass(frozen=True)
class LayerSplit:
    """An image model cut after one layer.

    Attributes:
        layer: The layer's name (``path``: the nested networks holding it, outermost first).
        features: uint8 images -> the layer's activations ``(rows, h, w, channels)``.
        head: activations -> one score per class.
        scores: ``logit`` or ``probability``: what the head's columns are.
    """

    layer: str
    path: tuple[str, ...]
    features: Any
    head: Any
    scores: str


def split_at_layer(keras_model, layer: str | None, *, binary: bool, model_uri: str = ""):
    """Cut ``keras_model`` after ``layer`` (default: the last convolution's activated output).

    Raises:
        UserInputError: No such layer (the message lists the convolution layers), a layer
            without a spatial output, or one a skip connection bypasses.
    """
    chain, chosen = _find(keras_model, layer, model_uri)
    if len(chosen.output.shape) != SPATIAL_RANK:
        raise UserInputError(
            f"Grad-CAM needs a layer with a spatial (height, width, channels) output; "
            f"{chosen.name!r} outputs shape {tuple(chosen.output.shape)}. Convolution layers: "
            f"{_conv_listing(keras_model)}. Received: layer={chosen.name!r}"
        )
    try:
        features = _features(chain, chosen)
        head, scores = _head(chain, chosen, binary=binary)
    except ValueError as error:
        raise UserInputError(
            f"Cannot split the network after layer {chosen.name!r} ({str(error)[:120]}): a "
            f"skip connection probably bypasses it; choose the output of a block, such as "
            f"{_conv_listing(keras_model)}. Received: layer={chosen.name!r}"
        ) from error
    path = tuple(model.name for model in chain[1:])
    return LayerSplit(chosen.name, path, features, head, scores)


def _walk(model, chain=()):
    """Every layer in order with the chain of models holding it, nested models entered."""
    chain = (*chain, model)
    for layer in model.layers:
        if isinstance(layer, keras.Model) and _call_node(model, layer) is not None:
            yield from _walk(layer, chain)
        else:
            yield chain, layer


def _call_node(parent, child):
    """The node where ``parent``'s graph calls the nested ``child`` (``None``: not exactly once;
    a network built by ``keras.applications`` may also have been called in another graph)."""
    if not getattr(child, "inputs", None):
        return None
    ours = {id(node) for nodes in parent._nodes_by_depth.values() for node in nodes}
    calls = [node for node in child._inbound_nodes if id(node) in ours]
    return calls[0] if len(calls) == 1 else None


def _find(keras_model, name: str | None, model_uri: str):
    walked = list(_walk(keras_model))
    if name is not None:
        for chain, layer in walked:
            if layer.name == name:
                return chain, layer
        raise UserInputError(
            f"Layer {name!r} is not in the model; give one of its convolution layers, such "
            f"as {_conv_listing(keras_model)} (default: the last). Received: layer={name!r}"
        )
    convolutions = [index for index, (_, layer) in enumerate(walked) if _is_conv(layer)]
    if not convolutions:
        raise UserInputError(
            "Grad-CAM needs a convolution layer and this model has none (an MLP on pixels?); "
            f"use --method gradient, shap or lime. Received: model={model_uri!r}"
        )
    return _activated(walked, convolutions[-1])


def _activated(walked, index: int):
    """The last layer after ``walked[index]`` in the same network with the same spatial size
    (batch norm and activation after a convolution), stopping at the first that changes it."""
    chain, conv = walked[index]
    size = tuple(conv.output.shape[1:3])
    chosen = conv
    for later_chain, layer in walked[index + 1 :]:
        shape = getattr(layer, "output", None)
        shape = None if shape is None else tuple(shape.shape)
        if later_chain != chain or shape is None or len(shape) != SPATIAL_RANK:
            break
        if shape[1:3] != size:
            break
        chosen = layer
    return chain, chosen


def _is_conv(layer) -> bool:
    return isinstance(layer, _CONV_TYPES)


def conv_layer_names(keras_model) -> list[str]:
    """Names of the model's convolution layers (nested networks included), in order."""
    return [layer.name for _, layer in _walk(keras_model) if _is_conv(layer)]


def _conv_listing(keras_model) -> str:
    names = conv_layer_names(keras_model)
    if not names:
        return "(none)"
    shown = names[-_SHOWN_LAYERS:]
    return ("..., " if len(names) > len(shown) else "") + ", ".join(shown)


def _features(chain, chosen):
    """uint8 images -> ``chosen``'s output, composed across the nesting."""
    outer = chain[0]
    images = keras.Input(outer.inputs[0].shape[1:], dtype=outer.inputs[0].dtype, name="image")
    tensor = images
    for parent, child in zip(chain, chain[1:], strict=False):
        tensor = keras.Model(parent.inputs, _call_node(parent, child).input_tensors[0])(tensor)
    tensor = keras.Model(chain[-1].inputs, chosen.output)(tensor)
    return keras.Model(images, tensor, name="gradcam_features")


def _final_dense(outer):
    """``(network, layer)``: the Dense layer that produces the model's output and the (possibly
    nested) network holding it, when it ends in a sigmoid or softmax; else ``(None, None)``."""
    network = outer
    while True:
        last = network.layers[-1]
        if isinstance(last, keras.Model):
            node = _call_node(network, last)
            if node is None or node.output_tensors[0] is not network.outputs[0]:
                return None, None
            network = last
            continue
        activation = getattr(getattr(last, "activation", None), "__name__", "")
        if isinstance(last, keras.layers.Dense) and activation in ("sigmoid", "softmax"):
            if last.output is network.outputs[0]:
                return network, last
        return None, None


def _head(chain, chosen, *, binary: bool):
    """``chosen``'s output -> class scores, composed back out of the nesting."""
    owner, last = _final_dense(chain[0])
    logits = owner is not None and any(network is owner for network in chain)
    activations = keras.Input(chosen.output.shape[1:], name="activations")
    tensor, start = activations, chosen.output
    for depth in range(len(chain) - 1, -1, -1):
        network = chain[depth]
        end = last.input if logits and network is owner else network.outputs[0]
        if start is not end:
            tensor = keras.Model(start, end)(tensor)
        if depth:
            start = _call_node(chain[depth - 1], network).output_tensors[0]
    if logits:
        tensor = _Logits(last)(tensor)
    tensor = _per_class(tensor, binary=binary, logits=logits)
    head = keras.Model(activations, tensor, name="gradcam_head")
    return head, "logit" if logits else "probability"
