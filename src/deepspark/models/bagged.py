"""One Keras model from the members of a bagged k-fold ensemble: the mean of their outputs.

``average_members`` takes K trained deepspark models with the same raw-column inputs and returns
one ``keras.Model`` with those inputs whose output is the mean of the members' outputs (target
units for regression, probabilities for classifiers, which stay probabilities: a mean of
distributions is a distribution). Every member keeps its own preprocessing layers, so it sees the
raw rows exactly as it did in training.

The result is an ordinary functional model built from Keras' own layers (nested functional
members and ``keras.layers.Average``): it saves to one ``.keras`` file, loads with
``safe_mode=True`` on either backend, and everything downstream (pandas, Spark, SQL, serving,
explanations that feed raw rows) uses it like a single network.

Example:
    >>> combined = average_members([outcome.model for outcome in member_outcomes])
    >>> members_of(combined)  # the K members, in order
"""

from __future__ import annotations

from collections.abc import Sequence

from deepspark._backend import import_keras
from deepspark.errors import UserInputError

keras = import_keras()

BAGGED_MODEL_NAME = "deepspark_bagged"
MEMBER_PREFIX = "member_"
AVERAGE_LAYER = "average_of_members"


def average_members(members: Sequence, *, name: str = BAGGED_MODEL_NAME):
    """One model whose output is the mean of ``members``' outputs, on the same inputs.

    Args:
        members: Trained Keras models with the same named inputs (shape and dtype) and the
            same output shape. They are wrapped, not copied: the combined model shares their
            weights; their optimizers are left behind.
        name: The combined model's name.

    Returns:
        A functional ``keras.Model``: inputs named like the members', output ``(rows, outputs)``.

    Raises:
        UserInputError: No members, or members whose inputs or outputs differ.
    """
    members = list(members)
    if not members:
        raise UserInputError("A bagged ensemble needs at least one member. Received: members=[]")
    signature = _input_signature(members[0])
    for index, member in enumerate(members[1:], start=1):
        if _input_signature(member) != signature or member.output_shape != members[0].output_shape:
            raise UserInputError(
                "Every member of a bagged ensemble needs the same inputs and output shape; "
                f"member {index} differs from member 0. Received: "
                f"inputs={_input_signature(member)}, expected={signature}"
            )
    inputs = {
        input_name: keras.Input(shape=shape, dtype=dtype, name=input_name)
        for input_name, shape, dtype in signature
    }
    outputs = [
        _uncompiled(member, f"{MEMBER_PREFIX}{index}")(_member_inputs(member, inputs))
        for index, member in enumerate(members)
    ]
    output = outputs[0] if len(outputs) == 1 else keras.layers.Average(name=AVERAGE_LAYER)(outputs)
    return keras.Model(inputs=inputs, outputs=output, name=name)


def members_of(model) -> list:
    """The members of a model made by ``average_members`` (in order); ``[]`` for another model."""
    return [layer for layer in model.layers if layer.name.startswith(MEMBER_PREFIX)]


def is_bagged(model) -> bool:
    """Whether ``model`` was made by ``average_members``."""
    return bool(members_of(model))


def split_members(model, encoded_tensor_of) -> tuple:
    """A model made by ``average_members`` cut where each member encodes its raw inputs
    (each member has its own preprocessing, so there is no one encoded space).

    Args:
        model: The combined model.
        encoded_tensor_of: ``encoded_tensor_of(member) -> tensor``: where a member's own
            preprocessing ends (``explain.encoded`` knows deepspark's layer names).

    Returns:
        ``(encoder, network, members)``: ``encoder`` maps the raw inputs to every member's
        encoded features side by side; ``network`` maps those to the mean of the members'
        outputs, so ``network(encoder(x)) == model(x)``; ``members`` in the encoder's order.
        Gradients of ``network`` sum, per member, to that member's share of the mean: an
        attribution method run on the halves explains the averaged model.
    """
    members = members_of(model)
    inputs = {tensor.name: tensor for tensor in model.inputs}
    encoders, networks, widths = [], [], []
    for member in members:
        encoded = encoded_tensor_of(member)
        encoders.append(keras.Model(member.input, encoded, name=f"{member.name}_encoder"))
        networks.append(keras.Model(encoded, member.output, name=f"{member.name}_network"))
        widths.append(int(encoded.shape[-1]))
    parts = [
        part(_member_inputs(member, inputs)) for part, member in zip(encoders, members, strict=True)
    ]
    encoder = keras.Model(model.inputs, keras.layers.Concatenate(name="encoded_members")(parts))
    side_by_side = keras.Input(shape=(sum(widths),), name="encoded_members")
    starts = [sum(widths[:index]) for index in range(len(widths))]
    outputs = [
        network(side_by_side[:, start : start + width])
        for network, start, width in zip(networks, starts, widths, strict=True)
    ]
    average = keras.layers.Average()(outputs) if len(outputs) > 1 else outputs[0]
    return encoder, keras.Model(side_by_side, average), members


def _input_signature(model) -> list[tuple[str, tuple, str]]:
    """``(name, shape without rows, dtype)`` per input, by name."""
    return sorted(
        (tensor.name, tuple(tensor.shape[1:]), str(tensor.dtype)) for tensor in model.inputs
    )


def _uncompiled(member, member_name: str):
    """A functional view of ``member`` under ``member_name`` sharing its layers and weights,
    without its optimizer (the combined model is for inference; a nested optimizer would only
    add variables to the saved file)."""
    return keras.Model(inputs=member.input, outputs=member.output, name=member_name)


def _member_inputs(member, inputs: dict):
    """The combined model's input tensors in the structure ``member`` takes (a dict by name,
    a list, or one tensor)."""
    structure = member.input
    if isinstance(structure, dict):
        return {key: inputs[tensor.name] for key, tensor in structure.items()}
    if isinstance(structure, list | tuple):
        return [inputs[tensor.name] for tensor in structure]
    return inputs[structure.name]
