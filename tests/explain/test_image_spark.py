"""Image explanations on Spark (``binaryFile``) equal the single-process ones for the same seed."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import deepspark

pytestmark = pytest.mark.spark


def _explain(trained, data, method, *, spark, options=None, rows=6):
    return deepspark.explain(
        trained.model_uri,
        str(data),
        method=method,
        rows=rows,
        background=12,
        seed=11,
        spark=spark,
        options=options,
        log_to_mlflow=False,
        tracking_uri=trained.tracking_uri,
    )


@pytest.mark.parametrize(
    ("method", "options"),
    [("gradcam", None), ("lime", {"num_samples": 60}), ("gradient", {"max_steps": 64})],
)
def test_spark_equals_single_process(spark, image_run, method, options):
    local = _explain(image_run, image_run.data, method, spark=False, options=options)
    distributed = _explain(image_run, image_run.data, method, spark=True, options=options)
    for key in ("data_rows", "background", "background_source", "details"):
        assert distributed.summary[key] == local.summary[key], key
    pd.testing.assert_frame_equal(
        distributed.explanation.table(), local.explanation.table(), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_array_equal(distributed.explanation.images, local.explanation.images)
    np.testing.assert_allclose(
        distributed.explanation.attributions, local.explanation.attributions, rtol=1e-4,
        atol=1e-6,
    )  # fmt: skip
    if method == "gradient":
        assert distributed.summary["max_additivity_error"] <= 0.01


def test_bad_files_are_listed_on_spark_as_in_one_process(spark, image_run, tmp_path):
    folder = tmp_path / "few"
    for name in ("horizontal", "vertical"):
        (folder / name).mkdir(parents=True)
        for path in sorted((image_run.data / name).glob("*.png"))[:2]:
            shutil.copy(path, folder / name / path.name)
    (folder / "vertical" / "000a.png").write_text("not an image")
    (folder / "vertical" / "_ignored.png").write_text("hidden from Hadoop and from us")
    local = _explain(image_run, folder, "gradcam", spark=False, rows=10)
    distributed = _explain(image_run, folder, "gradcam", spark=True, rows=10)
    for result in (local, distributed):
        assert result.summary["data_rows"] == 5 and result.summary["bad_images"] == 1
        (bad,) = result.explanation.details["bad_images"]
        assert bad["row_id"] == 3 and bad["source"].endswith("vertical/000a.png")
    assert list(distributed.explanation.row_ids) == [0, 1, 2, 4]
    pd.testing.assert_frame_equal(
        distributed.explanation.table(), local.explanation.table(), rtol=1e-5, atol=1e-7
    )
