import keras
import numpy as np
import pytest

from deepspark.config import ACTIVATIONS, TrainConfig
from deepspark.data.encoding import encode_features
from deepspark.data.schema import infer_schema, learn_vocabularies
from deepspark.models import build_mlp, fit_numeric_stats
from tests.conftest import make_table


def prepared(task="regression", rows=120):
    schema, frame = infer_schema(make_table(rows=rows, task=task), "y")
    schema = learn_vocabularies(schema, frame)
    inputs = encode_features(frame, schema)
    return schema, inputs, fit_numeric_stats(inputs["numeric"])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds_and_predicts(activation):
    schema, inputs, stats = prepared()
    config = TrainConfig(
        data="x", hidden=(8, 4), activation=activation, dropout=0.1, batch_norm=True
    )
    model = build_mlp(schema, stats, config, target_center=5.0, target_scale=2.0)
    output = keras.ops.convert_to_numpy(model(inputs, training=False))
    assert output.shape == (120, 1)
    assert np.isfinite(output).all()


def test_prelu_has_a_learnable_slope():
    schema, _, stats = prepared()
    model = build_mlp(schema, stats, TrainConfig(data="x", hidden=(8,), activation="prelu"))
    prelu = model.get_layer("prelu_1")
    assert [weight.shape for weight in prelu.trainable_weights] == [(8,)]


def test_heads_follow_the_task():
    schema, inputs, stats = prepared(task="multiclass", rows=200)
    model = build_mlp(schema, stats, TrainConfig(data="x", hidden=(8,)))
    probabilities = keras.ops.convert_to_numpy(model(inputs))
    assert probabilities.shape == (200, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    schema, inputs, stats = prepared(task="binary")
    output = np.asarray(
        keras.ops.convert_to_numpy(
            build_mlp(schema, stats, TrainConfig(data="x", hidden=(8,)))(inputs)
        )
    )
    assert output.shape == (120, 1) and ((output > 0) & (output < 1)).all()


def test_embedding_for_many_levels_one_hot_for_few():
    frame = make_table(rows=300)
    frame["city"] = [f"c{i % 40}" for i in range(300)]
    schema, frame = infer_schema(frame, "y")
    schema = learn_vocabularies(schema, frame)
    stats = fit_numeric_stats(encode_features(frame, schema)["numeric"])
    model = build_mlp(schema, stats, TrainConfig(data="x", hidden=(8,)))
    names = [layer.name for layer in model.layers]
    assert "embed_city" in names and "one_hot_color" in names
