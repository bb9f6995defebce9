"""JAX side of ``deepspark.runtime``: jitted stateless calls, padded to a few fixed sizes."""

from __future__ import annotations

import weakref

import numpy as np

_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GRADIENT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GRADIENT_BATCH_ROWS = 65_536


def _state(model):
    return (
        [variable.value for variable in model.trainable_variables],
        [variable.value for variable in model.non_trainable_variables],
    )


def _forward_function(model):
    function = _FORWARD.get(model)
    if function is None:
        import jax

        def call(trainable, non_trainable, inputs):
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            return outputs

        function = _FORWARD[model] = jax.jit(call)
    return function


def _gradient_function(model):
    function = _GRADIENT.get(model)
    if function is None:
        import jax
        import jax.numpy as jnp

        def selected_sum(points, trainable, non_trainable, columns):
            outputs, _ = model.stateless_call(trainable, non_trainable, points, training=False)
            return jnp.take_along_axis(outputs, columns[:, None], axis=1).sum()

        gradient = jax.grad(selected_sum)
        function = _GRADIENT[model] = jax.jit(
            lambda trainable, non_trainable, points, columns: gradient(
                points, trainable, non_trainable, columns
            )
        )
    return function


def compile_count(model) -> int:
    """Compiled variants of ``model``'s inference and gradient functions (for tests)."""
    return sum(cache[model]._cache_size() for cache in (_FORWARD, _GRADIENT) if model in cache)


def _pad(values: np.ndarray, size: int) -> np.ndarray:
    values = np.ascontiguousarray(values)
    if len(values) == size:
        return values
    padding = np.zeros((size - len(values), *values.shape[1:]), dtype=values.dtype)
    return np.concatenate([values, padding])


def forward(model, inputs, *, rows: int, batch_rows: int) -> np.ndarray:
    from deepspark.runtime import padded_size

    function = _forward_function(model)
    trainable, non_trainable = _state(model)
    outputs = []
    for start in range(0, rows, batch_rows):
        count = min(batch_rows, rows - start)
        size = padded_size(count, batch_rows)
        if isinstance(inputs, dict):
            chunk = {
                name: _pad(values[start : start + count], size) for name, values in inputs.items()
            }
        else:
            chunk = _pad(inputs[start : start + count], size)
        outputs.append(np.asarray(function(trainable, non_trainable, chunk))[:count])
    return np.concatenate(outputs, axis=0)


def input_gradients(model, points: np.ndarray, columns: np.ndarray) -> np.ndarray:
    from deepspark.runtime import padded_size

    function = _gradient_function(model)
    trainable, non_trainable = _state(model)
    batch_rows = _GRADIENT_BATCH_ROWS
    results = []
    for start in range(0, len(points), batch_rows):
        count = min(batch_rows, len(points) - start)
        size = padded_size(count, batch_rows)
        gradient = function(
            trainable,
            non_trainable,
            _pad(points[start : start + count], size),
            _pad(columns[start : start + count], size),
        )
        results.append(np.asarray(gradient, dtype=np.float64)[:count])
    return np.concatenate(results, axis=0)


def set_threads(count: int) -> None:
    # XLA's CPU thread pool is sized once per process (XLA_FLAGS before JAX starts); Spark
    # tasks share a worker's cores through spark.task.cpus instead.
    return None


def framework_versions() -> dict[str, str]:
    import jax
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
