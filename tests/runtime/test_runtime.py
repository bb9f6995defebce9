"""deepspark.runtime on the backend Keras runs on: outputs equal a plain Keras call, gradients are
exact, and on JAX a stream of batches of any size compiles a bounded number of times."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from deepspark import runtime
from deepspark.runtime import forward, input_gradients, padded_size


def dense_model(width: int = 5, outputs: int = 3):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((width,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(outputs)(hidden))


def test_forward_equals_a_plain_keras_call_for_any_row_count():
    model = dense_model()
    rng = np.random.default_rng(0)
    for rows in (1, 7, 300):
        x = rng.normal(size=(rows, 5)).astype(np.float32)
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(
            forward(model, x, batch_rows=128), expected, rtol=1e-5, atol=1e-6
        )
    assert forward(model, np.zeros((0, 5), np.float32)).shape == (0, 3)


def test_forward_takes_named_inputs():
    numeric = keras.Input((2,), name="numeric")
    model = keras.Model({"numeric": numeric}, keras.layers.Dense(1)(numeric))
    x = {"numeric": np.ones((10, 2), np.float32)}
    assert forward(model, x).shape == (10, 1)


def test_input_gradients_of_a_linear_model_are_its_weights():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    kernel = keras.ops.convert_to_numpy(model.layers[-1].kernel)
    points = np.random.default_rng(2).normal(size=(50, 4)).astype(np.float32)
    columns = np.arange(50) % 3
    gradients = input_gradients(model, points, columns)
    assert gradients.dtype == np.float64 and gradients.shape == (50, 4)
    np.testing.assert_allclose(gradients, kernel.T[columns], rtol=1e-6)


def test_padded_sizes_are_a_small_fixed_set():
    sizes = {padded_size(rows, 8192) for rows in range(1, 8193)}
    assert sizes == {16 * 2**power for power in range(10)}  # 16 ... 8192
    assert padded_size(9000, 10_000) == 10_000


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="compilation is JAX's (torch is eager)"
)
def test_a_stream_of_batch_sizes_compiles_once_per_padded_size():
    from deepspark.runtime._jax import compile_count

    model = dense_model()
    rng = np.random.default_rng(3)
    first = [1, 9, 16, 100, 1000, 5000, 8192, 9000, 20_001]  # the last two span several chunks
    for rows in first:
        forward(model, rng.normal(size=(rows, 5)).astype(np.float32))
    chunks = [min(8192, rows - start) for rows in first for start in range(0, rows, 8192)]
    assert compile_count(model) == len({padded_size(chunk, 8192) for chunk in chunks}) == 5
    # Any other sizes within the same buckets (a Spark job's batches, a file's last batch):
    for rows in (2, 5, 15, 99, 1001, 4097, 8191, 8193, 16_385):
        forward(model, rng.normal(size=(rows, 5)).astype(np.float32))
    assert compile_count(model) <= len({16 * 2**power for power in range(10)})
    gradient_points = rng.normal(size=(37, 5)).astype(np.float32)
    input_gradients(model, gradient_points, np.zeros(37, dtype=int))
    before = compile_count(model)
    input_gradients(model, gradient_points[:33], np.zeros(33, dtype=int))
    assert compile_count(model) == before


def test_framework_versions_name_the_backend():
    versions = runtime.framework_versions()
    assert versions["keras_backend"] == keras.backend.backend()
    assert keras.backend.backend() in versions


CACHED_PROGRAM = """
from deepspark._backend import import_keras
import_keras()
import jax, numpy as np
print(float(jax.jit(lambda x: (x * 2.0 + 1.0).sum())(np.arange(3.0, dtype=np.float32))))
"""


def _run_cached_program(tmp_path, cache, **env):  # a fresh process, as a rank is
    import os
    import subprocess
    import sys

    environment = {
        **os.environ, "KERAS_BACKEND": "jax", "DEEPSPARK_JAX_CACHE": str(cache), **env
    }  # fmt: skip
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    return subprocess.run(
        [sys.executable, "-c", CACHED_PROGRAM], env=environment, cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def test_a_distributed_rank_reuses_compiled_programs_and_survives_a_torn_entry(tmp_path):
    """Ranks of a distributed job (WORLD_SIZE > 1) keep JAX's compiled programs on disk like a
    single process; an entry that another process left half-written is compiled again, with the
    right result."""
    cache = tmp_path / "jax-cache"
    first = _run_cached_program(tmp_path, cache, WORLD_SIZE="2", RANK="1")
    assert first.stdout.strip() == "9.0"
    entries = sorted(cache.glob("jit__lambda*-cache"))
    assert len(entries) == 1 and entries[0].stat().st_size > 100
    # A reader that meets an entry in the middle of its write:
    entries[0].write_bytes(entries[0].read_bytes()[: entries[0].stat().st_size // 2])
    torn = _run_cached_program(tmp_path, cache, WORLD_SIZE="2", RANK="0")
    assert torn.stdout.strip() == "9.0"
    assert "Error reading persistent compilation cache entry" in torn.stderr


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="compiled programs are JAX's (torch is eager)"
)
def test_compiled_programs_of_earlier_models_are_released_only_when_mappings_pile_up(
    monkeypatch,
):
    """Past the share of the kernel's mapping limit, building a fresh model clears JAX's
    caches (the mappings of dead models' programs go); below it, nothing is released."""
    import gc

    from deepspark.runtime import _jax

    if _jax.memory_mappings() is None:
        pytest.skip("/proc does not report memory mappings here")

    def compile_programs_of_dead_models():
        for width in range(3, 23):
            forward(dense_model(width=width), np.ones((4, width), np.float32))
        gc.collect()

    compile_programs_of_dead_models()
    # The share is set around this process's own count: a test worker that ran many tests
    # before this one may already hold more than the default share's mappings.
    kept, limit = _jax.memory_mappings()
    monkeypatch.setattr(_jax, "MAPPINGS_SHARE", (kept + 1000) / limit)
    assert runtime.release_compiled_programs() is False  # below the share
    assert _jax.memory_mappings()[0] >= kept - 5
    monkeypatch.setattr(_jax, "MAPPINGS_SHARE", (kept - 10) / limit)
    assert runtime.release_compiled_programs() is True
    released, _ = _jax.memory_mappings()
    assert released < kept - 40, (kept, released)  # 20 models' programs, several mappings each
    # The models in use still work: they compile again.
    model = dense_model()
    np.testing.assert_allclose(
        forward(model, np.ones((2, 5), np.float32)),
        keras.ops.convert_to_numpy(model(np.ones((2, 5), np.float32))),
        rtol=1e-5,
    )


def test_the_compilation_cache_is_trimmed_to_its_size_least_recently_used_first(tmp_path):
    """Past the size limit the entries used longest ago go until 3/4 of it is left; the folder
    is scanned at most once a day."""
    import os
    import time

    from deepspark.runtime._jax import CACHE_PRUNE_SECONDS, prune_compilation_cache

    now = time.time()
    for age in range(10):  # entry 9 was used longest ago
        entry = tmp_path / f"jit_step-{age:064x}-cache"
        entry.write_bytes(b"x" * 1000)
        os.utime(entry, (now - age * 3600, now - age * 3600))
    (tmp_path / "jit_step-0-atime").write_bytes(b"12345678")  # JAX's own stamps stay
    assert prune_compilation_cache(tmp_path, max_bytes=20_000) == 0  # under the limit
    stamp = tmp_path / ".deepspark-pruned"
    os.utime(stamp, (now - CACHE_PRUNE_SECONDS - 1,) * 2)  # a day later
    assert prune_compilation_cache(tmp_path, max_bytes=8_000) == 4  # down to 6,000 bytes
    left = sorted(int(path.name.split("-")[1], 16) for path in tmp_path.glob("*-cache"))
    assert left == [0, 1, 2, 3, 4, 5]
    assert (tmp_path / "jit_step-0-atime").exists()
    assert prune_compilation_cache(tmp_path, max_bytes=1_000) == 0  # pruned today already
