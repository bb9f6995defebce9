"""Per-epoch checkpoints that survive SIGKILL: files are complete before ``state.json`` names them.

A failed write (a full disk: ``StorageFullError``) removes the epoch's own files and leaves the
previous epoch's checkpoint as it was, so ``train --resume`` goes on from it.

Checkpoints live in the run's store (``deepspark.store``): a local folder, or an object store that
every host of a cluster sees, so that a restarted rank on another host resumes from them.

Layout of a run's checkpoint folder::

    run.json            config, schema, data fingerprint (written once)
    model.keras         the compiled model (architecture, optimizer settings; written once)
    epoch-0007.npz      values of the model's and optimizer's variables after epoch 7 (only the
                        latest is kept)
    best.weights.npz    weights of the best validation epoch (early stopping restores them;
                        written first as .best.weights.npz.next, renamed once state.json is)
    state.json          last completed epoch, callback state, history (replaced atomically)
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from deepspark.errors import StorageFullError
from deepspark.store.store import CHECKPOINT_DIR_ENV, TMPDIR_FIX, Store

STATE_FILE = "state.json"
MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
BEST_WEIGHTS_FILE = "best.weights.npz"
BEST_WEIGHTS_STAGED = ".best.weights.npz.next"  # complete, but not yet the checkpoint's


def checkpoint_root(checkpoint_dir: str | None = None, store: str | Store | None = None) -> Store:
    """Where runs keep their checkpoints: ``checkpoint_dir``, else ``$DEEPSPARK_CHECKPOINT_DIR``,
    else the ``checkpoints`` folder of the store (``--store``, ``$DEEPSPARK_STORE`` or
    ``./.deepspark/store``)."""
    chosen = checkpoint_dir or os.environ.get(CHECKPOINT_DIR_ENV)
    if chosen:
        return Store(chosen)
    return Store.resolve(store).child("checkpoints")


class CheckpointStore:
    """Reads and writes the checkpoint folder of one run.

    Args:
        location: The run's checkpoint folder: a ``Store``, a URI or a local path.
        model_file: Name of the compiled model's file (a fine-tuning phase has its own).
    """

    def __init__(self, location: str | Path | Store, *, model_file: str = MODEL_FILE):
        self.store = location if isinstance(location, Store) else Store(location)
        # A training phase that changes the model's compiled form (transfer learning's
        # fine-tuning: other trainable layers, a new optimizer) saves it under its own name.
        self.model_file = model_file

    @property
    def directory(self) -> str:
        """The checkpoint folder's URI (a local path for a local store)."""
        return self.store.uri

    def write_run_info(self, document: dict[str, Any]) -> None:
        """Write ``run.json`` (whole, atomically).

        Raises:
            StorageFullError: The disk is full; nothing was written.
        """
        self.store.write_json(document, RUN_FILE)

    def read_run_info(self) -> dict[str, Any]:
        return self.store.read_json(RUN_FILE)

    def has_run_info(self) -> bool:
        return self.store.exists(RUN_FILE)

    def read_state(self) -> dict[str, Any] | None:
        return self.store.read_json(STATE_FILE) if self.store.exists(STATE_FILE) else None

    def remove(self) -> None:
        """Delete the whole checkpoint folder (a finished run)."""
        self.store.delete()

    def save_epoch(self, model, epoch: int, state: dict[str, Any], best_weights=None) -> None:
        """Save the model after ``epoch`` (0-based), then point ``state.json`` at it.

        The ``.keras`` file (architecture, compile settings) is written once; each epoch writes
        only the values of the model's and the optimizer's variables, a few milliseconds
        instead of a whole model file per epoch. A file becomes part of the checkpoint when
        ``state.json`` names it: when a write fails, this epoch's files are removed and the
        previous epoch's checkpoint is left as it was.

        Raises:
            StorageFullError: The disk filled up; the message names the epoch kept.
        """
        previous = self.read_state()
        variables_file = f"epoch-{epoch:04d}.npz"
        written: list[str] = []
        try:
            if not self.store.exists(self.model_file):
                self._save_model_file(model)
            written.append(variables_file)
            self.store.write_bytes(_npz_bytes(_variable_values(model)), variables_file)
            if best_weights is not None:
                # Staged under another name: best.weights.npz changes only with state.json.
                written.append(BEST_WEIGHTS_STAGED)
                self.store.write_bytes(_npz_bytes(best_weights), BEST_WEIGHTS_STAGED)
            document = {**state, "epoch": epoch, "model_file": self.model_file}
            self.store.write_json({**document, "variables_file": variables_file}, STATE_FILE)
        except BaseException as error:
            kept = previous.get("variables_file") if previous else None
            for name in written:
                if name != kept:
                    with contextlib.suppress(OSError):  # the first error is the one to tell
                        self.store.delete(name)
            if isinstance(error, StorageFullError):
                raise self._full(epoch, previous, error) from error
            raise
        if best_weights is not None:
            self.store.rename(BEST_WEIGHTS_STAGED, BEST_WEIGHTS_FILE)
        stale = previous.get("variables_file") if previous else None
        if stale not in (None, variables_file):
            self.store.delete(stale)

    def _save_model_file(self, model) -> None:
        """Write the compiled model once (Keras saves to a local file, uploaded whole)."""
        with tempfile.TemporaryDirectory(prefix="deepspark-checkpoint-") as folder:
            local = Path(folder) / self.model_file
            try:
                model.save(local)
            except Exception as error:  # Keras raises OSError, h5py or zip writers their own
                if StorageFullError.caused(error):
                    raise StorageFullError.writing(self.model_file, folder, TMPDIR_FIX) from error
                raise
            self.store.upload(local, self.model_file)

    def _full(self, epoch: int, previous, error: StorageFullError) -> StorageFullError:
        """The full-disk error of a checkpoint: which epoch failed, which one is kept, and how
        to go on."""
        run_id = Path(self.directory).name
        run_id = run_id if re.fullmatch(r"[0-9a-f]{32}", run_id) else "RUN_ID"
        kept = (
            f"the checkpoint of epoch {previous['epoch'] + 1} is kept"
            if previous
            else "no epoch was checkpointed yet"
        )
        resume = f"deepspark train --resume {run_id}"
        if error.where.startswith(self.directory):
            fix = (
                f"{kept}: free space there and continue with: {resume} (new runs can keep "
                f"checkpoints on another disk with --store or ${CHECKPOINT_DIR_ENV})"
            )
        else:  # the temporary folder Keras saves the model file into
            fix = f"{kept}: {error.fix}, then continue with: {resume}"
        return StorageFullError.writing(
            f"the checkpoint of epoch {epoch + 1} ({error.what})", error.where, fix
        )

    def load_model(self, state: dict[str, Any]):
        """Load the checkpointed model with its optimizer state (compiled)."""
        from deepspark.models.loader import load_keras_model

        with self.store.local_copy(state["model_file"]) as path:
            model = load_keras_model(path)
        if state.get("variables_file"):
            _assign_variable_values(model, self._read_npz(state["variables_file"]))
        return model

    def load_best_weights(self) -> list[np.ndarray] | None:
        if not self.store.exists(BEST_WEIGHTS_FILE):
            return None
        return self._read_npz(BEST_WEIGHTS_FILE)

    def _read_npz(self, name: str) -> list[np.ndarray]:
        with np.load(io.BytesIO(self.store.read_bytes(name))) as archive:
            return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def _npz_bytes(values) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *values)
    return buffer.getvalue()


def _variables(model) -> list:
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return [*model.variables, *(optimizer.variables if optimizer is not None else ())]


def _variable_values(model) -> list[np.ndarray]:
    from keras import ops

    return [ops.convert_to_numpy(variable.value) for variable in _variables(model)]


def _assign_variable_values(model, values: list[np.ndarray]) -> None:
    variables = _variables(model)
    if len(variables) != len(values):
        raise ValueError(
            f"The checkpoint holds {len(values)} variables but its model has {len(variables)}; "
            "the checkpoint folder is damaged or mixed with another run's."
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


#: Run artifacts of ``keep_checkpoints`` (``--keep-checkpoints``), by ``which``.
KEPT_CHECKPOINTS = {"best": "checkpoints/best.keras", "last": "checkpoints/last.keras"}


def log_kept_checkpoints(best_model, store: CheckpointStore, *, run_id: str | None = None):
    """Log ``best_model`` (the run's model, best epoch restored) as ``checkpoints/best.keras``
    and the last completed epoch's model from ``store`` as ``checkpoints/last.keras``.

    Both are compiled (optimizer state included), so training can go on from either.
    """
    import mlflow

    state = store.read_state()
    last_model = store.load_model(state) if state is not None else best_model
    with tempfile.TemporaryDirectory(prefix="deepspark-kept-") as folder:
        for which, model in (("best", best_model), ("last", last_model)):
            local = Path(folder) / Path(KEPT_CHECKPOINTS[which]).name
            model.save(local)
            mlflow.log_artifact(str(local), "checkpoints", run_id=run_id)


def load_checkpoint(
    run_id: str,
    which: str = "best",
    *,
    tracking_uri: str | None = None,
    compile: bool = True,
):
    """Load a checkpoint a run kept with ``keep_checkpoints=True`` (``--keep-checkpoints``).

    Args:
        run_id: The MLflow run.
        which: ``best`` (the epoch with the lowest validation loss: the weights the run's
            model has) or ``last`` (the last completed epoch).
        tracking_uri: MLflow tracking URI; default MLflow's current one.
        compile: Restore the optimizer, loss and metrics (to train on with ``fit``).

    Returns:
        The Keras model. It takes deepspark's encoded inputs; for raw rows load the run's
        model with ``deepspark.load_model``.

    Raises:
        UserInputError: ``which`` is not ``best`` or ``last``, or the run kept no checkpoints.

    Example:
        >>> result = deepspark.train("houses.csv", "median_house_value", keep_checkpoints=True)
        >>> model = deepspark.load_checkpoint(result.run_id, which="last")
    """
    import mlflow

    from deepspark.errors import UserInputError
    from deepspark.models.loader import load_keras_model

    if which not in KEPT_CHECKPOINTS:
        raise UserInputError(f"which= is 'best' or 'last'. Received: which={which!r}")
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=KEPT_CHECKPOINTS[which], tracking_uri=tracking_uri
        )
    except Exception as error:  # noqa: BLE001  MLflow raises several types for a missing file
        raise UserInputError(
            f"Run {run_id} has no {KEPT_CHECKPOINTS[which]}: train with keep_checkpoints=True "
            f"(--keep-checkpoints) to keep them. Received: run_id={run_id!r}"
        ) from error
    return load_keras_model(path, compile=compile)
