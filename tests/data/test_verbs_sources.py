"""predict, explain and tune read through the one source model: Parquet folders, s3:// datasets
(moto), DataFrames; predict streams data over its memory budget into a local or s3:// output
that appears whole or not at all."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import deepspark
from deepspark.data.readers import load_builtin
from deepspark.errors import DataError, UserInputError
from deepspark.tracking.predict import PredictSummary
from tests.cli.test_cli import assert_one_line_error, invoke
from tests.conftest import make_table
from tests.object_store import s3_bucket, s3_server  # noqa: F401  (fixtures)

TINY = {"epochs": 1, "hidden": (8,), "batch_size": 64, "seed": 1}
# Far below any table here: forces the streamed path (batches of the smallest size, 256 rows).
TINY_BUDGET_MB = 0.001
ROWS = 700


@dataclasses.dataclass(frozen=True)
class Lab:
    folder: Path
    model: str  # a binary classifier's folder (no tracking store needed to load it)
    features: pd.DataFrame  # numbers, text, missing values, and a pass-through row_id


@pytest.fixture(scope="module")
def lab(tmp_path_factory, mlflow_template):
    import mlflow

    from deepspark.tracking.model import resolve_model_dir

    folder = tmp_path_factory.mktemp("verbs")
    database = folder / "mlflow.db"
    shutil.copy(mlflow_template, database)
    uri = f"sqlite:///{database}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("DEEPSPARK_CHECKPOINT_DIR", str(folder / "checkpoints"))
        patch.setenv("DEEPSPARK_STORE", str(folder / "store"))
        mlflow.set_tracking_uri(uri)
        data = folder / "binary.csv"
        make_table(rows=300, task="binary").to_csv(data, index=False)
        trained = deepspark.train(str(data), "y", **TINY)
        features = make_table(rows=ROWS, seed=5, task="binary").drop(columns="y")
        yield Lab(
            folder=folder,
            model=str(resolve_model_dir(trained.model_uri)),
            features=features.assign(row_id=np.arange(ROWS)),
        )
        while mlflow.active_run() is not None:
            mlflow.end_run()


def write_folder(frame: pd.DataFrame, folder: Path, parts: int = 3) -> Path:
    folder.mkdir(parents=True)
    for index, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        table = pa.Table.from_pandas(frame.iloc[chunk], preserve_index=False)
        pq.write_table(table, folder / f"part-{index}.parquet")
    (folder / "_SUCCESS").write_text("")
    return folder


def assert_same_scores(streamed: pd.DataFrame, in_memory: pd.DataFrame) -> None:
    """Equal tables; predictions to float32 precision (batches of other sizes may round the
    network's sums in another order)."""
    assert list(streamed.columns) == list(in_memory.columns)
    scores = [name for name in in_memory.columns if name.startswith(("prediction", "prob"))]
    scores = [name for name in scores if pd.api.types.is_float_dtype(in_memory[name])]
    pd.testing.assert_frame_equal(
        streamed.drop(columns=scores), in_memory.drop(columns=scores), check_dtype=False
    )
    for name in scores:
        np.testing.assert_allclose(streamed[name], in_memory[name], rtol=1e-5, atol=1e-6)


def no_partial_files(folder: Path) -> bool:
    return not [path for path in folder.rglob("*") if ".partial" in path.name]


def test_parquet_folder_in_memory_and_streamed_outputs_agree(lab, tmp_path):
    data = write_folder(lab.features, tmp_path / "houses")
    expected = deepspark.predict(lab.model, lab.features)
    in_memory = deepspark.predict(lab.model, str(data))
    assert isinstance(in_memory, pd.DataFrame)
    pd.testing.assert_frame_equal(in_memory, expected)
    scores = ["prediction", "probability_no", "probability_yes"]
    assert list(in_memory.columns) == [*lab.features.columns, *scores]
    assert set(in_memory["prediction"]) == {"yes", "no"}

    for suffix, read in ((".parquet", pd.read_parquet), (".csv", pd.read_csv),
                         (".jsonl", lambda p: pd.read_json(p, lines=True))):  # fmt: skip
        whole, streamed = tmp_path / f"whole{suffix}", tmp_path / f"streamed{suffix}"
        deepspark.predict(lab.model, str(data), output=whole)
        summary = deepspark.predict(
            lab.model, str(data), output=streamed, max_memory_mb=TINY_BUDGET_MB
        )
        assert isinstance(summary, PredictSummary)
        assert (summary.rows, summary.bad_rows, summary.batches) == (ROWS, 0, 3)
        assert list(summary.columns) == list(in_memory.columns)
        assert_same_scores(read(streamed), read(whole))
    assert no_partial_files(tmp_path)


def test_text_in_numeric_cells_is_counted_when_streamed(lab, tmp_path):
    # x2 as text, two cells not numbers: counted, written with empty predictions, not fatal.
    rows = lab.features
    whole = deepspark.predict(lab.model, rows)
    text = rows.assign(x2=rows["x2"].map(lambda value: None if pd.isna(value) else f"{value}"))
    text.loc[[3, 600], "x2"] = ["abc", "n.a."]
    bad = write_folder(text, tmp_path / "text")
    with pytest.raises(UserInputError, match=r"Column 'x2' is numeric .* has text in 2"):
        deepspark.predict(lab.model, str(bad))  # in memory: an error, as before
    output = tmp_path / "bad.parquet"
    summary = deepspark.predict(lab.model, str(bad), output=output, max_memory_mb=TINY_BUDGET_MB)
    scored = pd.read_parquet(output)
    assert summary.bad_rows == 2 and summary.rows == ROWS
    assert summary.bad_examples == ("row 3: x2='abc'", "row 600: x2='n.a.'")
    assert scored.loc[[3, 600], "prediction"].isna().all()
    assert scored.loc[[3, 600], "probability_yes"].isna().all()
    good = scored.drop(index=[3, 600])
    assert good["prediction"].notna().all()
    np.testing.assert_allclose(
        good["probability_yes"], whole.drop(index=[3, 600])["probability_yes"], atol=1e-5
    )


def test_predict_reads_and_writes_s3(lab, tmp_path, s3_bucket):  # noqa: F811
    filesystem, root = pafs.FileSystem.from_uri(f"{s3_bucket.uri}/houses")
    for index, chunk in enumerate(np.array_split(np.arange(ROWS), 2)):
        table = pa.Table.from_pandas(lab.features.iloc[chunk], preserve_index=False)
        pq.write_table(table, f"{root}/part-{index}.parquet", filesystem=filesystem)
    expected = deepspark.predict(lab.model, lab.features)

    scored = deepspark.predict(
        lab.model, f"{s3_bucket.uri}/houses/", output=f"{s3_bucket.uri}/out/whole.parquet"
    )
    pd.testing.assert_frame_equal(scored, expected)
    summary = deepspark.predict(
        lab.model, f"{s3_bucket.uri}/houses/", output=f"{s3_bucket.uri}/out/streamed.csv",
        max_memory_mb=TINY_BUDGET_MB,
    )  # fmt: skip
    assert summary.rows == ROWS and summary.output == f"{s3_bucket.uri}/out/streamed.csv"
    local = tmp_path / "streamed.parquet"
    deepspark.predict(
        lab.model, f"{s3_bucket.uri}/houses/", output=local, max_memory_mb=TINY_BUDGET_MB
    )
    whole = pq.read_table(f"{root.rsplit('/', 1)[0]}/out/whole.parquet", filesystem=filesystem)
    with filesystem.open_input_stream(f"{root.rsplit('/', 1)[0]}/out/streamed.csv") as stream:
        streamed_csv = pd.read_csv(stream)
    assert_same_scores(whole.to_pandas(), expected)
    assert_same_scores(streamed_csv, expected)
    assert_same_scores(pd.read_parquet(local), expected)
    listed = filesystem.get_file_info(pafs.FileSelector(root.rsplit("/", 1)[0], recursive=True))
    assert not [info.path for info in listed if "partial" in info.path]

    with pytest.raises(UserInputError, match=r"Output already exists; pass --overwrite"):
        deepspark.predict(lab.model, lab.features, output=f"{s3_bucket.uri}/out/whole.parquet")
    with pytest.raises(UserInputError, match=r"Output bucket or container 'no-such-bucket-x1'"):
        deepspark.predict(lab.model, lab.features, output="s3://no-such-bucket-x1/o.csv")


def _failing_csv(path: Path, features: pd.DataFrame) -> Path:
    """A CSV whose column ``count`` holds whole numbers for its first 1 MB (its type is read
    from there), then a decimal: reading it fails half-way through the stream."""
    rows = pd.concat([features] * 40, ignore_index=True)
    rows["count"] = rows["count"].round().astype("int64").astype(object)
    rows.loc[len(rows) - 5, "count"] = 40.5
    rows.to_csv(path, index=False)
    assert path.stat().st_size > 1_200_000
    return path


def test_a_failing_streamed_predict_leaves_no_output(lab, tmp_path, s3_bucket):  # noqa: F811
    data = _failing_csv(tmp_path / "late-decimal.csv", lab.features)
    outputs = [tmp_path / "out" / "scored.parquet", tmp_path / "out" / "scored.csv",
               f"{s3_bucket.uri}/scored.parquet"]  # fmt: skip
    (tmp_path / "out").mkdir()
    for output in outputs:
        with pytest.raises(DataError, match=r"Cannot parse data file as CSV"):
            deepspark.predict(lab.model, str(data), output=output, max_memory_mb=TINY_BUDGET_MB)
    assert not list((tmp_path / "out").iterdir())  # neither the file nor a temporary one
    filesystem, bucket = pafs.FileSystem.from_uri(s3_bucket.uri)
    assert not filesystem.get_file_info(pafs.FileSelector(bucket, recursive=True))


def test_data_over_the_budget_needs_an_output(lab, tmp_path):
    data = write_folder(lab.features, tmp_path / "houses")
    with pytest.raises(UserInputError, match=r"more than the memory budget .* pass output="):
        deepspark.predict(lab.model, str(data), max_memory_mb=TINY_BUDGET_MB)
    with pytest.raises(UserInputError, match=r"max_memory_mb must be a positive number"):
        deepspark.predict(lab.model, str(data), max_memory_mb=0)


def test_cli_predict_from_s3(lab, tmp_path, s3_bucket, capsys):  # noqa: F811
    filesystem, root = pafs.FileSystem.from_uri(f"{s3_bucket.uri}/houses")
    pq.write_table(
        pa.Table.from_pandas(lab.features, preserve_index=False),
        f"{root}/part-0.parquet",
        filesystem=filesystem,
    )
    source = f"{s3_bucket.uri}/houses/"
    output = f"{s3_bucket.uri}/scored.parquet"
    code, out, err = invoke(
        capsys, "predict", "--model", lab.model, "--data", source, "--output", output,
        "--max-memory", str(TINY_BUDGET_MB), "--json",
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    assert document["rows"] == ROWS and document["streamed"] is True
    assert document["bad_rows"] == 0 and document["columns"][-3] == "prediction"
    assert (
        pq.read_table(f"{root.rsplit('/', 1)[0]}/scored.parquet", filesystem=filesystem)[
            "prediction"
        ].null_count
        == 0
    )
    local = tmp_path / "scored.csv"
    code, out, err = invoke(
        capsys, "predict", "--model", lab.model, "--data", source, "--output", str(local)
    )
    assert code == 0, err
    assert out.strip() == f"scored {ROWS} rows -> {local}"

    code, out, err = invoke(
        capsys, "predict", "--model", lab.model, "--data", "s3://no-such-bucket-x2/houses/",
        "--output", str(tmp_path / "never.csv"),
    )  # fmt: skip
    assert_one_line_error(code, out, err, r"bucket or container 'no-such-bucket-x2'")
    code, out, err = invoke(
        capsys, "predict", "--model", lab.model, "--data", source,
        "--output", "s3://no-such-bucket-x3/scored.csv",
    )  # fmt: skip
    assert_one_line_error(code, out, err, r"Output bucket or container 'no-such-bucket-x3'")
    assert not (tmp_path / "never.csv").exists()


def test_explain_a_dataframe_and_a_parquet_folder(lab, tmp_path):
    data = write_folder(lab.features, tmp_path / "houses")
    settings = {"rows": 3, "background": 10, "log_to_mlflow": False}
    from_frame = deepspark.explain(lab.model, lab.features, **settings)
    from_folder = deepspark.explain(lab.model, str(data), **settings)
    assert from_frame.summary["data_rows"] == from_folder.summary["data_rows"] == ROWS
    pd.testing.assert_frame_equal(from_frame.explanation.table(), from_folder.explanation.table())
    assert from_folder.summary["max_additivity_error"] < 0.05


def test_explain_reads_a_large_table_only_so_far(lab, tmp_path):
    from deepspark.explain.api import ExplainedTable, SampledRows
    from deepspark.tracking.model import load_model

    data = write_folder(lab.features, tmp_path / "houses", parts=4)
    model = load_model(lab.model)
    table = ExplainedTable.open(str(data), model, seed=3, limit=100)
    assert isinstance(table.pool, SampledRows) and table.pool.total is None
    assert table.head(7)["row_id"].tolist() == list(range(7))
    assert table.rows == ROWS  # from the Parquet footers
    assert len(table.pool) == 100 and table.pool.total == ROWS
    sample = table.pool.take(np.arange(100))
    assert list(sample.columns) == model.feature_names
    again = ExplainedTable.open(str(data), model, seed=3, limit=100).pool.take(np.arange(100))
    pd.testing.assert_frame_equal(sample, again)  # seeded
    positions = lab.features.reset_index().merge(sample, on=model.feature_names)["index"]
    assert len(positions) == 100 and positions.is_monotonic_increasing  # in source order
    assert positions.iloc[-1] > 300  # drawn from the whole table, not its head


def test_tune_on_a_parquet_folder_runs_a_trial(lab, tmp_path):
    pytest.importorskip("optuna", reason="the tune extra is not installed")
    table = load_builtin("diabetes")
    data = write_folder(table, tmp_path / "diabetes")
    space = {"layers": "1:1", "width": "4:8"}
    result = deepspark.tune(
        str(data), "disease_progression", trials=1, space=space, epochs=1, batch_size=64,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
    )  # fmt: skip
    assert result.trials["complete"] == 1 and result.metrics["test_rmse"] > 0
    frame_result = deepspark.tune(
        table, "disease_progression", trials=1, space=space, epochs=1, batch_size=64,
        storage=f"sqlite:///{tmp_path / 'study-frame.db'}",
    )  # fmt: skip
    assert frame_result.trials["complete"] == 1
    assert frame_result.best_value == pytest.approx(result.best_value, rel=1e-6)
