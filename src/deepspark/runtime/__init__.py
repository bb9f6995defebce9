"""The one place that knows which framework runs Keras: everything Keras does not abstract.

deepspark code calls these functions with NumPy arrays and gets NumPy arrays back; the backend
module behind them (``_jax`` or ``_torch``) is chosen by the backend Keras runs on:

- ``forward``: a model's output in inference mode, in chunks (on JAX compiled once per padded
  chunk size, so a stream of batches of any size compiles a bounded number of times);
- ``input_gradients``: gradients of chosen output columns with respect to the inputs;
- ``set_threads``: the intra-op threads of a worker process;
- ``release_compiled_programs``: frees the compiled programs of earlier models when a process
  holds many;
- ``framework_versions``: what the model artifact records.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from deepspark._backend import backend_name, import_keras

DEFAULT_BATCH_ROWS = 8192


def _module() -> ModuleType:
    import_keras()
    name = backend_name()
    if name == "jax":
        from deepspark.runtime import _jax as module
    else:
        from deepspark.runtime import _torch as module
    return module


def forward(model, inputs, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> np.ndarray:
    """Output of ``model`` for ``inputs`` (a dict of arrays, or one array), inference mode.

    Args:
        model: A Keras model.
        inputs: Model inputs by name, or one array for a single-input model.
        batch_rows: Most rows per forward pass.

    Returns:
        The output as a NumPy array with one row per input row.
    """
    rows = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    if rows == 0:
        return np.zeros((0, *model.output_shape[1:]), dtype=np.float32)
    return _module().forward(model, inputs, rows=rows, batch_rows=max(1, int(batch_rows)))


def input_gradients(model, points: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Gradient of ``output[row, columns[row]]`` with respect to each row of ``points``.

    Args:
        model: A single-input Keras model with a (rows, outputs) output.
        points: Float inputs, (rows, ...): any shape after the rows axis (a table's
            (rows, width), an image model's (rows, height, width, channels)).
        columns: The output column to differentiate for each row, (rows,) integers.

    Returns:
        float64 gradients of the shape of ``points``.
    """
    if len(points) == 0:
        return np.zeros(points.shape, dtype=np.float64)
    points = np.ascontiguousarray(points, dtype=np.float32)
    columns = np.ascontiguousarray(columns, dtype=np.int32).reshape(-1)
    return _module().input_gradients(model, points, columns)


def set_threads(count: int) -> None:
    """Intra-op threads of this process (a Spark task gets ``spark.task.cpus`` cores)."""
    _module().set_threads(int(count))


def release_compiled_programs() -> bool:
    """Free the programs compiled for earlier models when this process holds many of them.

    On JAX, compiled programs stay in JAX's in-memory caches after their model is gone, each
    holding memory mappings (a bagged training of 5 members on a small table left about 4,000).
    A process that trains model after model (a suite, ``tune``, a notebook) reached the kernel's
    limit (``vm.max_map_count``, 65,530) after about 16 bagged trainings and died in XLA ("LLVM
    compilation error: Cannot allocate memory", then a segmentation fault). Past a quarter of
    the limit (``_jax.MAPPINGS_SHARE``) JAX's caches are cleared: a model still in use compiles
    again on its next call, from the on-disk compilation cache. Below it nothing is cleared, so
    the members of one bagged training keep sharing their compiled programs. Nothing to do on
    torch (eager) or where ``/proc`` does not say.

    Returns:
        Whether compiled programs were released.
    """
    return _module().release_compiled_programs()


def framework_versions() -> dict[str, str]:
    """``{"keras_backend": ..., framework: version}`` of the running backend."""
    return {"keras_backend": backend_name(), **_module().framework_versions()}


def padded_size(rows: int, batch_rows: int, *, smallest: int = 16) -> int:
    """The chunk size ``rows`` (<= ``batch_rows``) runs as: the next power of two (at least
    ``smallest``), capped at ``batch_rows``. A bounded set of sizes means a bounded number of
    compilations, whatever batch sizes a stream brings."""
    size = max(smallest, 1 << max(0, int(rows) - 1).bit_length())
    return min(size, batch_rows) if rows <= batch_rows else rows
