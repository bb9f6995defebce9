"""Assertions and markers shared by the per-backend and per-launcher correctness tests."""

from __future__ import annotations

import numpy as np
import pytest

from deepspark._backend import backend_name
from tests.distributed.rank_functions import single_process_reference

# Horovod trains Keras on torch; its tests run in the torch parity set (`make test`).
torch_only = pytest.mark.skipif(
    backend_name() != "torch",
    reason="Horovod trains Keras on torch: runs in the torch parity set (KERAS_BACKEND=torch)",
)


def assert_matches_single_process(result: dict, *, world: int = 2) -> None:
    """Same weights and the same (global) metric history as one process on all the data; the
    last validation metrics equal those of the whole validation set."""
    assert result["world"] == world
    reference = single_process_reference()
    for got, expected in zip(result["weights"], reference["weights"], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for name, values in reference["history"].items():
        np.testing.assert_allclose(result["history"][name], values, rtol=1e-5, err_msg=name)
    for name, value in result["whole_val"].items():
        np.testing.assert_allclose(result["history"][f"val_{name}"][-1], value, rtol=1e-5)
