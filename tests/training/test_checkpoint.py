import json

import numpy as np
import pytest

from deepspark.config import TrainConfig
from deepspark.training.checkpoint import CheckpointStore
from deepspark.training.fit import build_compiled_model
from deepspark.training.prepare import prepare_data


@pytest.mark.parity  # variables and optimizer state round-trip on each backend
def test_checkpoint_keeps_optimizer_state_and_only_the_latest_epoch(regression_csv, tmp_path):
    prepared = prepare_data(
        TrainConfig(data=str(regression_csv), target="y", hidden=(16,), batch_size=32)
    )
    model = build_compiled_model(prepared)
    store = CheckpointStore(tmp_path / "run")
    store.write_run_info({"config": {}})
    for epoch in range(2):
        model.fit(prepared.inputs["train"], prepared.targets["train"], epochs=1, verbose=0)
        store.save_epoch(
            model, epoch, {"history": [{"epoch": epoch}]}, best_weights=model.get_weights()
        )
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 1 and state["variables_file"] == "epoch-0001.npz"
    files = sorted(path.name for path in (tmp_path / "run").iterdir())
    assert files == ["best.weights.npz", "epoch-0001.npz", "model.keras", "run.json", "state.json"]
    loaded = store.load_model(store.read_state())
    for saved, restored in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(restored, saved)
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_allclose(restored.numpy(), saved.numpy())
    for saved, restored in zip(model.get_weights(), store.load_best_weights(), strict=True):
        np.testing.assert_allclose(restored, saved)
