"""Bagged k-fold ensembles: K members on K-1 folds, out-of-fold validation, one combined model."""

from __future__ import annotations

import numpy as np
import pytest

from deepspark.config import make_config
from deepspark.errors import UserInputError
from deepspark.models.bagged import average_members, is_bagged, members_of
from deepspark.models.inference import predict_arrays
from deepspark.training.bagging import (
    check_bagging,
    fold_assignment,
    train_bagged,
)
from deepspark.training.prepare import prepare_data
from tests.conftest import FAST, make_table

K = 3
TINY = {**FAST, "epochs": 3, "patience": 2}


def _prepared(task: str, rows: int):
    """A tiny table with the plain MLP (the fastest builder; bagging treats all alike)."""
    import dataclasses

    frame = make_table(rows=rows, seed=3, task=task)
    config = make_config({"data": "<pandas DataFrame>", "target": "y", **TINY})
    return dataclasses.replace(prepare_data(config, data=frame), builder="mlp")


def _copy(inputs: dict) -> dict:
    return {name: np.array(values, copy=True) for name, values in inputs.items()}


@pytest.fixture(scope="module")
def bagged_table():
    """One tiny three-class table bagged with K=3 (trained once for the module)."""
    prepared = _prepared("multiclass", 240)
    test_before = (_copy(prepared.inputs["test"]), prepared.targets["test"].copy())
    return prepared, train_bagged(prepared, K), test_before


def test_combined_model_is_the_mean_of_its_members(bagged_table):
    prepared, bagged, _ = bagged_table
    test_inputs = prepared.inputs["test"]
    members = [outcome.model for outcome in bagged.members]
    expected = np.mean([predict_arrays(member, test_inputs) for member in members], axis=0)
    combined = predict_arrays(bagged.model, test_inputs)
    assert combined.shape == expected.shape == (prepared.rows["test"], 3)
    np.testing.assert_allclose(combined, expected, atol=1e-5, rtol=1e-5)
    assert len(members_of(bagged.model)) == K and is_bagged(bagged.model)
    # The members differ (own folds, own seeds): the mean is not one member's output.
    assert np.ptp([predict_arrays(member, test_inputs)[:5] for member in members], axis=0).max() > 0


def test_out_of_fold_rows_cover_every_training_and_validation_row_once(bagged_table):
    prepared, bagged, _ = bagged_table
    pooled = prepared.rows["train"] + prepared.rows["val"]
    assert bagged.folds.shape == (pooled,)
    assert sorted(np.unique(bagged.folds)) == list(range(K))
    sizes = np.bincount(bagged.folds)
    assert sizes.sum() == pooled and sizes.max() - sizes.min() <= 1
    pool_inputs = {
        name: np.concatenate([prepared.inputs["train"][name], prepared.inputs["val"][name]])
        for name in prepared.inputs["train"]
    }
    # Each row's OOF output is the output of the one member that held its fold out.
    for index, outcome in enumerate(bagged.members):
        rows = bagged.folds == index
        held_out = {name: values[rows] for name, values in pool_inputs.items()}
        np.testing.assert_allclose(
            bagged.oof_output[rows], predict_arrays(outcome.model, held_out), atol=1e-5
        )
    targets = np.concatenate([prepared.targets["train"], prepared.targets["val"]]).reshape(-1)
    accuracy = float(np.mean(bagged.oof_output.argmax(axis=1) == targets))
    assert bagged.oof_metrics["accuracy"] == pytest.approx(accuracy)
    assert all(epochs >= 1 for epochs in bagged.member_epochs)
    assert all(1 <= best <= TINY["epochs"] for best in bagged.member_best_epochs)


def test_the_test_split_is_untouched(bagged_table):
    prepared, _, (test_inputs, test_targets) = bagged_table
    for name, values in test_inputs.items():
        np.testing.assert_array_equal(prepared.inputs["test"][name], values)
    np.testing.assert_array_equal(prepared.targets["test"], test_targets)
    # No test row is among the rows the members trained or stopped on.
    pooled = prepared.rows["train"] + prepared.rows["val"]
    from deepspark.training.bagging import member_data, pool_rows

    pool = pool_rows(prepared)
    assert len(pool.frame) == pooled
    member = member_data(prepared, pool, fold_assignment(pool.targets, K, seed=1, task="x"), 0)
    seen = set(map(tuple, member.split.train.astype(str).to_numpy())) | set(
        map(tuple, member.split.val.astype(str).to_numpy())
    )
    test_rows = set(map(tuple, prepared.split.test.astype(str).to_numpy()))
    assert seen.isdisjoint(test_rows)
    assert member.split.test is prepared.split.test


def test_a_classifiers_averaged_probabilities_sum_to_one(bagged_table, tmp_path):
    from deepspark.tracking.model import DeepsparkModel

    prepared, bagged, _ = bagged_table
    test_inputs = prepared.inputs["test"]
    probabilities = predict_arrays(bagged.model, test_inputs)
    assert probabilities.shape == (prepared.rows["test"], 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    members = [predict_arrays(outcome.model, test_inputs) for outcome in bagged.members]
    np.testing.assert_allclose(probabilities, np.mean(members, axis=0), atol=1e-5)
    assert 0.0 <= bagged.oof_metrics["accuracy"] <= 1.0 and "log_loss" in bagged.oof_metrics
    # One artifact: saved and loaded (safe mode) it predicts raw rows like the combined model.
    saved = DeepsparkModel(bagged.model, prepared.schema, {"run_id": "bagged-test"})
    loaded = DeepsparkModel.from_directory(saved.save(tmp_path / "model"))
    scored = loaded.predict(prepared.split.test)
    columns = [f"probability_{label}" for label in prepared.schema.class_labels]
    np.testing.assert_allclose(scored[columns].to_numpy(), probabilities, atol=1e-5)
    np.testing.assert_allclose(scored[columns].to_numpy().sum(axis=1), 1.0, atol=1e-5)
    assert len(members_of(loaded.keras_model)) == K


def test_folds_are_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [30, 12, 6])
    folds = fold_assignment(labels, 3, seed=5, task="multiclass")
    for label, count in ((0, 30), (1, 12), (2, 6)):
        per_fold = np.bincount(folds[labels == label], minlength=3)
        assert per_fold.tolist() == [count // 3] * 3
    np.testing.assert_array_equal(folds, fold_assignment(labels, 3, seed=5, task="multiclass"))
    assert not np.array_equal(folds, fold_assignment(labels, 3, seed=6, task="multiclass"))


def test_bad_member_counts_are_refused(bagged_table):
    prepared = bagged_table[0]
    with pytest.raises(UserInputError, match=r"from 2 to 20.*Received: bagging=1"):
        check_bagging(prepared, 1)
    with pytest.raises(UserInputError, match=r"too few for 20 folds.*Received: bagging=20"):
        check_bagging(_prepared("regression", 40), 20)


def test_members_with_different_inputs_are_refused(bagged_table):
    import keras

    other_input = keras.Input(shape=(2,), name="numeric")
    other = keras.Model(other_input, keras.layers.Dense(3)(other_input))
    with pytest.raises(UserInputError, match=r"same inputs and output shape.*Received: inputs="):
        average_members([bagged_table[1].members[0].model, other])
    with pytest.raises(UserInputError, match=r"at least one member.*Received: members=\[\]"):
        average_members([])


def test_fit_bagged_gives_the_workflow_a_fit_outcome_with_out_of_fold_metrics(bagged_table):
    from deepspark.training.bagging import BaggedOutcome, fit_bagged

    prepared, bagged, _ = bagged_table
    seen = []

    def trained_member(member, index):  # the fit_member seam: hand back the trained members
        seen.append((index, member.config.seed, member.rows["train"], member.rows["val"]))
        return bagged.members[index]

    outcome = fit_bagged(prepared, K, fit_member=trained_member)
    assert isinstance(outcome, BaggedOutcome) and outcome.diverged_at is None
    assert outcome.oof_metrics == pytest.approx(bagged.oof_metrics)
    assert outcome.member_epochs == bagged.member_epochs
    assert outcome.epochs_completed == max(bagged.member_epochs)
    pooled = prepared.rows["train"] + prepared.rows["val"]
    assert [index for index, *_ in seen] == list(range(K))
    assert [seed for _, seed, *_ in seen] == [prepared.config.seed + index for index in range(K)]
    assert all(train + val == pooled for *_, train, val in seen)
    np.testing.assert_allclose(
        predict_arrays(outcome.model, prepared.inputs["test"]),
        predict_arrays(bagged.model, prepared.inputs["test"]),
        atol=1e-6,
    )


def test_train_with_bagging_logs_one_averaged_model_with_out_of_fold_validation(workdir):
    import mlflow

    import deepspark

    table = make_table(rows=200, task="binary")
    result = deepspark.train(table, "y", bagging=3, hidden=(8,), epochs=3, batch_size=32)
    run = mlflow.get_run(result.run_id)
    assert run.data.params["bagging"] == "3"
    assert {f"member_{i}_best_epoch" for i in range(3)} <= set(run.data.metrics)
    assert 0.0 <= result.metrics["val_accuracy"] <= 1.0 and "test_accuracy" in result.metrics
    model = deepspark.load_model(result.model_uri)
    assert is_bagged(model.keras_model) and len(members_of(model.keras_model)) == 3
    scored = model.predict(table.drop(columns="y").head(5))
    assert len(scored) == 5 and scored["prediction"].notna().all()


def test_gradient_explanations_are_those_of_the_averaged_model(bagged_table, tmp_path):
    """Integrated gradients on the bagged artifact: additive, and the explained output is the
    mean of the members' (the predicted class's probability)."""
    from deepspark.explain.api import explain
    from deepspark.tracking.model import DeepsparkModel

    prepared, bagged, _ = bagged_table
    folder = DeepsparkModel(bagged.model, prepared.schema, {"run_id": "bagged-explain"}).save(
        tmp_path / "model"
    )
    rows = prepared.split.test.head(12)
    result = explain(
        str(folder), rows, method="gradient", rows=12, background=12, log_to_mlflow=False
    )
    explanation = result.explanation
    assert result.summary["max_additivity_error"] <= 0.01
    gaps = explanation.attributions.sum(axis=1) - (explanation.prediction - explanation.baseline)
    assert np.max(np.abs(gaps) / explanation.additivity_scale) <= 0.01
    inputs = {name: values[:12] for name, values in prepared.inputs["test"].items()}
    members = [predict_arrays(outcome.model, inputs) for outcome in bagged.members]
    mean = np.mean(members, axis=0)
    explained = mean[np.arange(12), mean.argmax(axis=1)]
    np.testing.assert_allclose(np.asarray(explanation.prediction), explained, atol=1e-5)


def test_tune_with_bagging_scores_each_trial_out_of_fold(workdir):
    """Each trial is a bagged ensemble scored on its out-of-fold rows; the retrained best (same
    seeds, same folds) reports that very score as its validation metric."""
    import deepspark
    from deepspark.tuning.space import OPTIONAL_ENTRIES, config_fields

    without_optional = {name: None for name in OPTIONAL_ENTRIES if name in config_fields()}
    table = make_table(rows=160, seed=5, task="regression")
    result = deepspark.tune(
        table,
        "y",
        trials=2,
        bagging=2,
        space={"hidden": "8|4", "dropout": "0", **without_optional},
        epochs=2,
        batch_size=32,
        patience=2,
    )
    assert result.trials == {"complete": 2, "pruned": 0, "failed": 0}
    assert result.metrics["val_rmse"] == pytest.approx(result.best_value, rel=1e-5)
    model = deepspark.load_model(result.model_uri).keras_model
    assert is_bagged(model) and len(members_of(model)) == 2
    with pytest.raises(UserInputError, match=r"too few for 20 folds.*Received: bagging=20"):
        deepspark.tune(table.head(40), "y", trials=1, bagging=20, epochs=1)


def test_bagged_trials_are_pruned_on_their_first_member(workdir):
    """The pruner sees the first member's curve on the first fold (the same fold in every
    trial); a pruned first member stops the trial before the other members train."""
    import optuna

    import deepspark
    from deepspark.tuning.space import OPTIONAL_ENTRIES, config_fields
    from tests.tuning.test_tune import trial_runs

    without_optional = {name: None for name in OPTIONAL_ENTRIES if name in config_fields()}
    result = deepspark.tune(
        make_table(rows=160, seed=5, task="regression"),
        "y",
        trials=4,
        bagging=2,
        space={"lr": "0.03,0.00001", "hidden": "8", "dropout": "0", **without_optional},
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
        epochs=2,
        batch_size=32,
        patience=2,
    )
    assert result.trials["pruned"] >= 1 and result.trials["complete"] >= 1
    assert result.best_params["lr"] == 0.03
    pruned = [
        run for run in trial_runs(result.run_id)
        if run.data.tags["deepspark.tune.state"] == "PRUNED"
    ]  # fmt: skip
    assert pruned and all(run.info.status == "FINISHED" for run in pruned)
    for run in pruned:
        assert run.data.tags["deepspark.tune.reason"] == "pruned after epoch 1 of the first member"
        assert run.data.metrics["epochs_completed"] == 1


# --- Bagging by default for small tables (config.default_bagging) --------------------------------

AUTO = {
    "hidden": (8,),
    "epochs": 1,
    "batch_size": 64,
    "ensemble_size": 1,
    "numeric_embedding": "none",
}


@pytest.fixture
def auto_bagging(workdir, monkeypatch):
    """The shipped default (tests/conftest.py turns default bagging off for every other test)."""
    from deepspark.config import AUTO_BAGGING_ROWS_ENV

    monkeypatch.delenv(AUTO_BAGGING_ROWS_ENV, raising=False)
    return workdir


def _bagging_of(result) -> tuple[int, str]:
    """Members of the logged model (1: one network) and the run's ``bagging`` param."""
    import mlflow

    import deepspark

    model = deepspark.load_model(result.model_uri).keras_model
    members = len(members_of(model)) if is_bagged(model) else 1
    return members, mlflow.get_run(result.run_id).data.params["bagging"]


@pytest.mark.parity  # the default bags on torch too (make test's parity set)
def test_a_small_table_is_bagged_by_default(auto_bagging, caplog):
    import logging

    import deepspark
    from deepspark.config import AUTO_BAGGING_MEMBERS, AUTO_BAGGING_ROWS

    table = make_table(rows=200, seed=4, task="regression")
    with caplog.at_level(logging.INFO, logger="deepspark"):
        result = deepspark.train(table, "y", **AUTO)
    assert AUTO_BAGGING_MEMBERS == 5
    assert _bagging_of(result) == (5, "5") and result.bagging == 5
    pooled = result.rows["train"] + result.rows["val"]
    expected = (
        f"bagging 5 members by default (a table of {pooled} training + validation rows, at "
        f"most {AUTO_BAGGING_ROWS:,}); --bagging 1 trains one network"
    )
    assert caplog.text.count(expected) == 1
    assert "test_rmse" in result.metrics  # the test split is still scored once


def test_an_explicit_bagging_1_trains_one_network(auto_bagging, caplog):
    import logging

    import deepspark

    table = make_table(rows=200, seed=4, task="regression")
    with caplog.at_level(logging.INFO, logger="deepspark"):
        result = deepspark.train(table, "y", bagging=1, **AUTO)
    assert _bagging_of(result) == (1, "1") and result.bagging == 1
    assert "by default" not in caplog.text


def test_a_table_above_the_threshold_trains_one_network(auto_bagging, monkeypatch):
    import deepspark
    from deepspark.config import AUTO_BAGGING_ROWS_ENV

    monkeypatch.setenv(AUTO_BAGGING_ROWS_ENV, "100")  # the 200-row table's ~170 pass it
    result = deepspark.train(make_table(rows=200, seed=4, task="binary"), "y", **AUTO)
    assert _bagging_of(result) == (1, "1") and result.bagging == 1


def test_a_model_the_user_chose_trains_one_network(auto_bagging):
    import deepspark

    result = deepspark.train(make_table(rows=200, seed=4), "y", model="mlp", **AUTO)
    assert _bagging_of(result) == (1, "1")


def test_the_threshold_variable_and_auto_resolve_in_one_place(monkeypatch):
    """No training: ``default_bagging`` and the ``auto`` spelling (CLI, TOML)."""
    from deepspark.config import AUTO_BAGGING_ROWS_ENV, default_bagging

    config = make_config({"data": "t.csv", "target": "y", "bagging": "auto"})
    assert config.bagging is None and make_config({"data": "t.csv", "bagging": "3"}).bagging == 3
    monkeypatch.setenv(AUTO_BAGGING_ROWS_ENV, "500")
    assert default_bagging(config, "tabular", pooled_rows=500) == 5
    assert default_bagging(config, "tabular", pooled_rows=501) == 1
    assert default_bagging(config, "tabular", pooled_rows=None) == 1  # streamed, tune, lr_find
    assert default_bagging(config, "image", pooled_rows=10) == 1
    distributed = make_config({"data": "t.csv", "workers": 2})
    assert default_bagging(distributed, "tabular", pooled_rows=10) == 1
    linear = make_config({"data": "t.csv", "activation": "linear"})  # the linear mlp
    assert default_bagging(linear, "tabular", pooled_rows=10) == 1
    explicit = make_config({"data": "t.csv", "bagging": 5})
    assert default_bagging(explicit, "tabular", pooled_rows=10**6) == 5
    monkeypatch.setenv(AUTO_BAGGING_ROWS_ENV, "0")
    assert default_bagging(config, "tabular", pooled_rows=10) == 1
    monkeypatch.setenv(AUTO_BAGGING_ROWS_ENV, "many")
    with pytest.raises(UserInputError, match=r"whole number of rows.*Received: DEEPSPARK_AUTO"):
        default_bagging(config, "tabular", pooled_rows=10)
    with pytest.raises(UserInputError, match=r"Invalid --bagging.*or auto.*Received: bagging="):
        make_config({"data": "t.csv", "bagging": "lots"})
    with pytest.raises(UserInputError, match=r"1 \(no bagging\) to 20.*Received: bagging=21"):
        make_config({"data": "t.csv", "bagging": 21})


def test_tune_trials_and_prepare_data_do_not_bag_by_default(monkeypatch):
    """Only ``train`` asks for default bagging; every other caller resolves ``None`` to 1."""
    from deepspark.config import AUTO_BAGGING_MEMBERS, AUTO_BAGGING_ROWS_ENV

    monkeypatch.delenv(AUTO_BAGGING_ROWS_ENV, raising=False)
    config = make_config({"data": "<pandas DataFrame>", "target": "y", **TINY})
    table = make_table(rows=120, seed=2)
    assert prepare_data(config, data=table, stream=False).config.bagging == 1
    assert (
        prepare_data(config, data=table, auto_bagging=True).config.bagging == AUTO_BAGGING_MEMBERS
    )
