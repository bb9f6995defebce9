"""Your own model, whole: a complete Keras model (no head added), a model subclass with its own
``train_step`` (stateless on JAX, stateful on torch), user callbacks, and one clear error for a
model that does not fit."""

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.errors import UserInputError
from deepspark.models.builders import complete
from deepspark.training.checkpoint import load_checkpoint
from tests.conftest import FAST


def _table(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.uniform(-2, 2, size=rows)
    return pd.DataFrame({"x1": x1, "x2": x2, "y": 2.0 * x1 - x2 + 10.0})


def _stateless_train_step(model, state, data):
    """Keras 3's custom training step on JAX: pure, variables in and out."""
    import jax

    trainable, non_trainable, optimizer_variables, metric_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

    def loss_fn(trainable):
        y_pred, updated = model.stateless_call(trainable, non_trainable, x, training=True)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        return loss, (y_pred, updated)

    (loss, (y_pred, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, grads, trainable
    )
    logs, new_metric_variables = {"own_step": 1.0}, []
    for metric in model.metrics:
        count = len(metric.variables)
        variables = metric_variables[len(new_metric_variables) :][:count]
        if metric.name == "loss":
            variables = metric.stateless_update_state(variables, loss)
        else:
            variables = metric.stateless_update_state(variables, y, y_pred)
        result = metric.stateless_result(variables)
        logs.update(result if isinstance(result, dict) else {metric.name: result})
        new_metric_variables += list(variables)
    return logs, (trainable, non_trainable, optimizer_variables, new_metric_variables)


def _stateful_train_step(model, data):
    """Keras 3's custom training step on torch: gradients through autograd."""
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    model.zero_grad()
    y_pred = model(x, training=True)
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
    loss.backward()
    variables = model.trainable_weights
    with torch.no_grad():
        model.optimizer.apply([variable.value.grad for variable in variables], variables)
    logs = {"own_step": 1.0}
    for metric in model.metrics:
        metric.update_state(loss) if metric.name == "loss" else metric.update_state(y, y_pred)
        result = metric.result()
        logs.update(result if isinstance(result, dict) else {metric.name: result})
    return logs


@keras.saving.register_keras_serializable(package="tests_own_models")
class OwnStepModel(keras.Model):
    """A functional subclass whose training step is its own (the Keras guide's pattern)."""

    def train_step(self, *arguments):
        if keras.backend.backend() == "jax":
            return _stateless_train_step(self, *arguments)
        return _stateful_train_step(self, *arguments)


class EpochLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append((epoch, dict(logs or {})))


def test_complete_model_on_raw_inputs_gets_no_head(workdir):
    numeric = keras.Input((2,), name="numeric")
    cleaned = keras.layers.Normalization(mean=[0.0, 0.0], variance=[1.0, 1.3])(numeric)
    output = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(10.0))(cleaned)
    model = complete(keras.Model(numeric, output, name="raw_linear"))
    result = deepspark.train(_table(), "y", model=model, lr=0.05, **{**FAST, "epochs": 2})
    names = [layer.name for layer in deepspark.load_model(result.model_uri).keras_model.layers]
    assert names == ["numeric", "raw_linear"]  # deepspark's raw input, the model: no head
    assert result.metrics["test_rmse"] < 3.0


@pytest.mark.parametrize(
    ("model_factory", "message"),
    [
        (lambda: complete(keras.Sequential([keras.layers.Dense(3)])), "must output the regression"),
        (
            lambda: complete(keras.Sequential([keras.Input((7,)), keras.layers.Dense(1)])),
            "must take the 2 encoded",
        ),
        (lambda: keras.Sequential(), "must take the 2 encoded features"),
    ],
    ids=["wrong-output-width", "wrong-input-width", "empty-sequential-body"],
)
def test_a_model_that_does_not_fit_fails_before_any_run(workdir, model_factory, message):
    with pytest.raises(UserInputError, match=message):
        deepspark.train(_table(rows=60), "y", model=model_factory(), **FAST)
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_own_train_step_is_not_distributed_and_callbacks_are_checked(workdir):
    inputs = keras.Input((2,))
    model = OwnStepModel(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(UserInputError, match="own train_step trains in one process"):
        deepspark.train(_table(rows=60), "y", model=model, workers=2, **FAST)
    with pytest.raises(UserInputError, match="keras.callbacks.Callback"):
        deepspark.train(_table(rows=60), "y", callbacks=[print], **FAST)
    assert mlflow.search_runs(search_all_experiments=True).empty


class StopAfter(keras.callbacks.Callback):
    """Fails the run after ``epochs`` epochs (their checkpoints written), as a crash would."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise RuntimeError("simulated crash")


def test_own_train_step_trains_tracked_with_callbacks_and_resumes(workdir):
    path = workdir / "table.csv"
    _table().to_csv(path, index=False)
    inputs = keras.Input((2,))  # the two encoded (standardized) numeric columns
    model = OwnStepModel(inputs, keras.layers.Dense(1)(inputs))
    settings = {**FAST, "epochs": 4, "patience": 4, "lr": 0.1, "keep_checkpoints": True}
    before_crash = EpochLogs()
    with pytest.raises(RuntimeError, match="simulated crash"):
        deepspark.train(
            str(path), "y", model=model, callbacks=[before_crash, StopAfter(2)], **settings
        )
    (run_id,) = mlflow.search_runs(search_all_experiments=True)["run_id"]
    assert mlflow.get_run(run_id).info.status == "FAILED"
    after_resume = EpochLogs()
    result = deepspark.train(resume=run_id, callbacks=[after_resume])
    assert result.resumed_from_epoch == 2 and result.epochs_completed == 4
    # the user's callbacks saw every epoch's complete logs, made by the model's own train_step
    seen = before_crash.seen + after_resume.seen
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3]
    assert all(logs["own_step"] == 1.0 and "val_loss" in logs for _, logs in seen)
    # no head was added: the output is the model's own, in target units
    logged = deepspark.load_model(result.model_uri)
    assert type(logged.keras_model).__name__ == "OwnStepModel"
    names = [layer.name for layer in logged.keras_model.layers]
    assert names[-1] == model.name and "prediction" not in names  # no deepspark head
    frame = _table(rows=20, seed=1)
    predicted = logged.predict(frame.drop(columns="y"))["prediction"]
    assert np.corrcoef(predicted, frame["y"])[0, 1] > 0.9
    run = mlflow.get_run(result.run_id)
    assert run.data.params["model"] == model.name and "train_own_step" in run.data.metrics
    assert not {"hidden", "ensemble_size", "filters"} & set(run.data.params)
    assert type(load_checkpoint(result.run_id, which="last")).__name__ == "OwnStepModel"
