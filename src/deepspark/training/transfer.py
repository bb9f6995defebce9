"""Transfer learning in two phases, in one MLflow run and one checkpoint folder.

1. **Head**: the pretrained base frozen, the new head trained (``epochs``, early stopping).
2. **Fine-tuning** (``fine_tune_layers``): from the head phase's best weights, the top N layers
   of the base (or all) unfrozen, the model recompiled with a new optimizer at
   ``fine_tune_lr`` (default a tenth of the head phase's rate), trained up to
   ``fine_tune_epochs`` more epochs. Early stopping starts from the head phase's best
   validation loss, so fine-tuning that does not help leaves the head phase's weights.

BatchNorm layers of the base stay frozen, in inference mode, in both phases (see
``models.transfer.unfreeze_top``). Epochs are numbered across both phases. Every
checkpoint records its phase; a resumed run continues in the phase it was killed in (the
fine-tuning phase saves its own ``.keras`` file: other trainable layers, another optimizer).

The phases are run by a ``PhaseRunner``: ``fit_phase`` here on one process; distributed
training passes its own, which runs each phase on every worker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from deepspark._backend import import_keras
from deepspark.models.transfer import unfreeze_top_layers
from deepspark.tracking.run import deferred_interrupts
from deepspark.training.checkpoint import CheckpointStore
from deepspark.training.fit import (
    FitOutcome,
    build_compiled_model,
    compile_model,
    default_callbacks,
    relog_missing_epochs,
    run_fit,
)
from deepspark.training.optimizers import DEFAULT_LEARNING_RATES
from deepspark.training.prepare import PreparedData

keras = import_keras()
logger = logging.getLogger("deepspark.training")

HEAD_PHASE, FINE_TUNE_PHASE = "head", "fine_tune"
FINE_TUNE_MODEL_FILE = "model-fine-tune.keras"
# A plateau: validation loss improving by less than this is no improvement (transfer runs).
DEFAULT_MIN_DELTA = 1e-3


def fine_tune_rate(config) -> float:
    """The fine-tuning learning rate: ``fine_tune_lr``, else a tenth of the head phase's."""
    if config.fine_tune_lr is not None:
        return float(config.fine_tune_lr)
    head_rate = config.lr if config.lr is not None else DEFAULT_LEARNING_RATES[config.optimizer]
    return head_rate / 10.0


# runner(prepared, store, *, state, model, phase) -> FitOutcome. ``model`` is None to build a
# fresh model (no state) or to resume from ``store`` (state from it); else the model to train,
# continuing after ``state`` (a state that starts the phase, see ``continuing_state``).
PhaseRunner = Callable[..., FitOutcome]


def fit_transfer(
    prepared: PreparedData, store: CheckpointStore, *, runner: PhaseRunner | None = None
) -> FitOutcome:
    """Both phases (or what is left of them after a resume; the head phase alone without
    ``fine_tune_layers``), each run by ``runner`` (default ``fit_phase``: this process)."""
    runner = runner or fit_phase
    state = store.read_state()
    if state is not None and state.get("phase") == FINE_TUNE_PHASE:
        store.model_file = FINE_TUNE_MODEL_FILE
        return runner(prepared, store, state=state, model=None, phase=FINE_TUNE_PHASE)
    head = runner(prepared, store, state=state, model=None, phase=HEAD_PHASE)
    config = prepared.config
    if head.diverged_at is not None or not config.fine_tune_layers:
        return head
    store.model_file = FINE_TUNE_MODEL_FILE
    model = head.model  # the head phase's best weights (early stopping restored them)
    unfrozen = unfreeze_top_layers(model, config.fine_tune_layers)
    rate = fine_tune_rate(config)
    compile_model(model, prepared, rate)
    logger.info(
        "fine-tuning: %s; learning rate %.3g, up to %d epochs",
        unfrozen.describe(),
        rate,
        config.fine_tune_epochs,
    )
    seed = continuing_state(head)
    outcome = runner(prepared, store, state=seed, model=model, phase=FINE_TUNE_PHASE)
    # The fine-tuning phase continues the head phase: a resume only if the head phase was one.
    return dataclasses.replace(outcome, resumed_from_epoch=head.resumed_from_epoch)


def continuing_state(head: FitOutcome) -> dict:
    """A state that starts the fine-tuning phase where the head phase ended: epoch numbering,
    history, and early stopping's best (the head phase's best validation loss)."""
    best = next(
        (entry["val_loss"] for entry in head.history if entry["epoch"] == head.best_epoch),
        float("inf"),
    )
    return {
        "epoch": head.epochs_completed - 1,
        "history": head.history,
        "callbacks": {"early_stopping": {"wait": 0, "best": best, "best_epoch": head.best_epoch}},
        "phase": FINE_TUNE_PHASE,
        "fine_tune_from_epoch": head.epochs_completed,
    }


def phase_settings(config, phase: str, state) -> tuple[Any, dict[str, Any]]:
    """A phase's settings and the facts its checkpoints record: the fine-tuning phase runs
    ``fine_tune_epochs`` after the head phase's last epoch, at ``fine_tune_rate``, without
    warmup."""
    extras: dict[str, Any] = {"phase": phase}
    if phase == FINE_TUNE_PHASE:
        start = int(state["fine_tune_from_epoch"])
        extras["fine_tune_from_epoch"] = start
        config = dataclasses.replace(
            config,
            epochs=start + config.fine_tune_epochs,
            lr=fine_tune_rate(config),
            warmup_epochs=0,
        )
    return config, extras


def fit_phase(prepared, store, *, state, model, phase: str) -> FitOutcome:
    """One phase on this process. The head phase trains on the frozen base's features,
    computed once, when nothing changes them from epoch to epoch (no augmentation; see
    ``cached_features``)."""
    config, extras = phase_settings(prepared.config, phase, state)
    resumed = model is None and state is not None
    if model is None:
        model = store.load_model(state) if resumed else build_compiled_model(prepared)
    if resumed:
        keras.utils.set_random_seed(config.seed + state["epoch"] + 1)
        with deferred_interrupts():
            relog_missing_epochs(state["history"])
        logger.info("Resuming the %s phase after epoch %d", phase, state["epoch"] + 1)
    callbacks = default_callbacks(config, store, state=state, extras=extras)
    set_min_delta(callbacks.early_stopping, config, log=phase == HEAD_PHASE and state is None)
    if phase == HEAD_PHASE and not config.augment:
        from deepspark.training.cached_features import fit_head_on_features

        outcome = fit_head_on_features(
            model, prepared, config=config, callbacks=callbacks, state=state
        )
        if outcome is not None:
            return outcome
    return run_fit(
        model,
        config,
        train=(prepared.inputs["train"], prepared.targets["train"]),
        validation=(prepared.inputs["val"], prepared.targets["val"]),
        callbacks=callbacks,
        state=state,
    )


def min_delta(config) -> float:
    """Early stopping's least decrease of the validation loss that counts as an improvement:
    ``config.min_delta`` when the settings have one, else ``DEFAULT_MIN_DELTA``."""
    value = getattr(config, "min_delta", None)
    return DEFAULT_MIN_DELTA if value is None else float(value)


def set_min_delta(early_stopping, config, *, log: bool) -> None:
    """Make ``early_stopping`` (a fresh Keras ``EarlyStopping``) stop on a plateau: a validation
    loss that improves by less than ``min_delta`` is no improvement. With ``log``, the value is
    logged (an MLflow param ``min_delta`` unless it is a setting, logged with the others)."""
    value = min_delta(config)
    early_stopping.min_delta = abs(value)
    if not log:
        return
    logger.info(
        "early stopping: val_loss must improve by at least %g within %d epochs",
        value,
        early_stopping.patience,
    )
    if not hasattr(config, "min_delta"):  # a settings field would be logged with the others
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.log_param("min_delta", value)
