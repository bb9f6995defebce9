"""JAX side of ``deepspark.runtime``: jitted stateless calls, padded to a few fixed sizes."""

from __future__ import annotations

import logging
import os
import weakref
from pathlib import Path

import numpy as np

logger = logging.getLogger("deepspark.runtime")

CACHE_ENV = "DEEPSPARK_JAX_CACHE"
_configured = {"cache": False}

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


#: Part of the kernel's limit on a process's memory mappings (``vm.max_map_count``, 65,530 by
#: default) past which ``release_compiled_programs`` clears JAX's caches: the rest is headroom
#: for the training about to start (a bagged training of a small table maps about 4,000).
MAPPINGS_SHARE = 0.25


def memory_mappings() -> tuple[int, int] | None:
    """(this process's memory mappings, the kernel's limit), or None where ``/proc`` does not
    say (not Linux)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            used = sum(1 for _ in maps)
        with open("/proc/sys/vm/max_map_count") as limit:
            return used, int(limit.read())
    except (OSError, ValueError):
        return None


def release_compiled_programs() -> bool:
    mappings = memory_mappings()
    if mappings is None or mappings[0] <= mappings[1] * MAPPINGS_SHARE:
        return False
    import jax

    jax.clear_caches()
    logger.debug("released JAX's compiled programs (%d of %d memory mappings)", *mappings)
    return True


def framework_versions() -> dict[str, str]:
    import jax
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


def configure_compilation_cache() -> None:
    """Keep JAX's compiled programs on disk (``~/.cache/deepspark/jax``), so a second run of the
    same model (a resume, the next job, a Spark worker) skips compilation: about 2-3 s of a
    small model's first epoch on CPU. ``DEEPSPARK_JAX_CACHE=off`` (or a folder) decides; JAX's own
    ``JAX_COMPILATION_CACHE_DIR`` wins.

    Distributed ranks use it too: their evaluation, prediction and frozen-base programs are the
    single-process ones (a host-collectives training step holds a host callback, which JAX never
    caches), and a 2-rank transfer-learning job started in 26 s instead of 44 s. Ranks on one host
    may write one entry at once: JAX writes entries without a lock, and a reader that meets a
    half-written one gets a decompression error, which JAX turns into a warning and a compile."""
    if _configured["cache"]:
        return
    _configured["cache"] = True
    setting = os.environ.get(CACHE_ENV, "")
    if (
        setting.lower() in ("off", "0", "false", "none")
        or "JAX_COMPILATION_CACHE_DIR" in os.environ
    ):
        return
    import jax

    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folder = Path(setting) if setting else cache_home / "deepspark" / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile as usual
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # deepspark's networks compile in well under JAX's default 1 s threshold.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    prune_compilation_cache(folder)


#: Most bytes the compilation cache keeps; past it, ``prune_compilation_cache`` deletes the
#: entries used longest ago until 3/4 of it is left.
CACHE_MAX_BYTES = 2 << 30
#: How often one host prunes (the stamp file's age): a scan stats every entry.
CACHE_PRUNE_SECONDS = 24 * 3600
_PRUNE_STAMP = ".deepspark-pruned"


def prune_compilation_cache(folder: Path, *, max_bytes: int | None = None) -> int:
    """Keep the compilation cache under ``CACHE_MAX_BYTES``, at most once a day per folder.

    JAX bounds its cache only with ``jax_compilation_cache_max_size``, whose eviction re-reads
    every entry's access stamp on each write (and fails on entries written without one), so
    deepspark trims the folder itself: entries least recently used (their newer of access and
    modification time) go first. Another process that was about to read a deleted entry
    compiles the program again. Returns the number of entries deleted."""
    import time

    limit = CACHE_MAX_BYTES if max_bytes is None else max_bytes
    stamp = folder / _PRUNE_STAMP
    try:
        if time.time() - stamp.stat().st_mtime < CACHE_PRUNE_SECONDS:
            return 0
    except OSError:
        pass  # never pruned here
    try:
        stamp.touch()
        entries = []
        with os.scandir(folder) as scan:
            for entry in scan:
                if entry.name.endswith("-cache") and entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    entries.append((max(info.st_atime, info.st_mtime), info.st_size, entry.path))
    except OSError:  # a read-only or vanished folder: JAX copes
        return 0
    total = sum(size for _, size, _ in entries)
    deleted = 0
    if total <= limit:
        return 0
    for _, size, path in sorted(entries):
        if total <= limit * 3 // 4:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size
        deleted += 1
    logger.info("compilation cache %s: deleted %d entries used longest ago", folder, deleted)
    return deleted
