"""Table sources resolved from real files in tmp_path, frames, a Delta table and Spark."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepspark.data.sources import DatasetSource, PandasSource, TableSource, resolve_source
from deepspark.errors import DataError, UserInputError
from tests.conftest import make_table
from tests.object_store import s3_bucket, s3_server  # noqa: F401


def _write(frame: pd.DataFrame, path) -> None:
    suffix = os.path.splitext(str(path))[1]
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)


def _streamed(source: TableSource, **kwargs) -> pd.DataFrame:
    batches = list(source.iter_batches(**kwargs))
    return pa.Table.from_batches(batches, schema=source.schema).to_pandas()


@pytest.fixture
def parquet_folder(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    for index, rows in enumerate([20, 10, 15]):
        _write(make_table(rows=rows, seed=index), folder / f"part-{index}.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.parquet.crc").write_bytes(b"crc")
    return folder


# --- each kind of source -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "reference"),
    [
        (".csv", pd.read_csv),
        (".tsv", lambda path: pd.read_csv(path, sep="\t")),
        (".parquet", pd.read_parquet),
        (".jsonl", lambda path: pd.read_json(path, lines=True)),
    ],
)
def test_file_reads_like_pandas(tmp_path, suffix, reference):
    path = tmp_path / f"table{suffix}"
    _write(make_table(rows=120), path)
    source = resolve_source(path)
    assert isinstance(source, DatasetSource)
    assert source.files == [str(path)]
    assert source.estimated_bytes == path.stat().st_size
    pd.testing.assert_frame_equal(source.read_pandas(), reference(path))
    pd.testing.assert_frame_equal(_streamed(source, batch_rows=50), source.read_pandas())
    pd.testing.assert_frame_equal(source.head(7), source.read_pandas().head(7))


def test_csv_values_parse_like_pandas(tmp_path):
    path = tmp_path / "tricky.csv"
    path.write_text(
        ",id,count,ratio,flag,day,note,note,blank\n"
        "0,1,3,0.5,True,2024-01-02,a,x,\n"
        "1,2,,NA,False,2024-01-03,,y,\n"
        "2,3,7,1e3,true,,None,z,\n"
    )
    loaded = resolve_source(path).read_pandas()
    expected = pd.read_csv(path)
    assert list(loaded.columns)[:2] == ["Unnamed: 0", "id"]
    assert list(loaded.columns)[-3:] == ["note", "note.1", "blank"]
    pd.testing.assert_frame_equal(loaded, expected)


def test_parquet_folder_counts_rows_from_footers(parquet_folder):
    source = resolve_source(parquet_folder)
    assert source.estimated_rows == 45
    assert source.description == f"Parquet dataset {parquet_folder} (3 files)"
    assert [os.path.basename(f) for f in source.files] == [f"part-{i}.parquet" for i in range(3)]
    assert source.estimated_bytes == sum(os.path.getsize(f) for f in source.files)
    expected = pd.concat([make_table(rows=r, seed=i) for i, r in enumerate([20, 10, 15])])
    pd.testing.assert_frame_equal(source.read_pandas(), expected.reset_index(drop=True))
    pd.testing.assert_frame_equal(_streamed(source, batch_rows=8), source.read_pandas())


def test_hive_partitions_become_typed_columns(tmp_path):
    for year, region, rows in [(2023, "north", 4), (2023, "south", 3), (2024, "north", 5)]:
        folder = tmp_path / "sales" / f"year={year}" / f"region={region}"
        folder.mkdir(parents=True)
        _write(pd.DataFrame({"amount": np.arange(rows, dtype="float64")}), folder / "p.parquet")
    source = resolve_source(tmp_path / "sales")
    assert source.schema.names == ["amount", "year", "region"]
    assert source.schema.field("year").type == pa.int64()
    frame = source.read_pandas()
    assert frame.groupby(["year", "region"]).size().to_dict() == {
        (2023, "north"): 4,
        (2023, "south"): 3,
        (2024, "north"): 5,
    }
    assert "partitioned by year, region" in source.description


def test_glob_matches_within_and_across_folders(tmp_path):
    (tmp_path / "a").mkdir()
    _write(make_table(rows=10), tmp_path / "one.csv")
    _write(make_table(rows=20, seed=1), tmp_path / "two.csv")
    _write(make_table(rows=30, seed=2), tmp_path / "a" / "three.csv")
    (tmp_path / "notes.txt.bak").write_text("not data")
    flat = resolve_source(str(tmp_path / "*.csv"))
    assert len(flat.files) == 2 and len(flat.read_pandas()) == 30
    assert flat.estimated_rows is None
    deep = resolve_source(str(tmp_path / "**" / "*.csv"))
    assert len(deep.files) == 3 and len(deep.read_pandas()) == 60
    assert deep.description.startswith("CSV files matching")


def test_file_uri(tmp_path):
    path = tmp_path / "table.parquet"
    _write(make_table(rows=12), path)
    source = resolve_source(path.as_uri())
    assert source.uri == path.as_uri()
    assert source.estimated_rows == 12
    assert source.files == [str(path)]


def test_pandas_frame():
    frame = make_table(rows=50)
    source = resolve_source(frame)
    assert isinstance(source, PandasSource)
    assert source.uri is None and source.files == [] and source.filesystem is None
    assert source.estimated_rows == 50
    assert source.schema.names == list(frame.columns)
    assert source.estimated_bytes >= frame.memory_usage(deep=True, index=False).sum()
    pd.testing.assert_frame_equal(_streamed(source, batch_rows=16), frame)
    assert [b.num_rows for b in source.iter_batches(batch_rows=16)] == [16, 16, 16, 2]
    narrowed = resolve_source(source, columns=["y", "x1"])
    assert list(narrowed.read_pandas().columns) == ["y", "x1"]


def test_builtin_dataset_round_trips():
    source = resolve_source("diabetes")
    assert source.estimated_rows == 442
    assert resolve_source(source.uri).estimated_rows == 442


def test_delta_table(tmp_path):
    deltalake = pytest.importorskip("deltalake", reason="the delta extra is not installed")
    table = tmp_path / "delta"
    first = make_table(rows=25)
    deltalake.write_deltalake(str(table), first)
    deltalake.write_deltalake(str(table), make_table(rows=15, seed=1), mode="append")
    for given in (table, f"delta:{table}"):
        source = resolve_source(given)
        assert source.uri == f"delta:{table}"
        assert source.estimated_rows == 40
        assert len(source.files) == 2
        assert "version 1" in source.description
    frame = _streamed(source, batch_rows=10)
    assert len(frame) == 40
    assert sorted(frame["x1"]) == pytest.approx(sorted(source.read_pandas()["x1"]))
    assert resolve_source(source.uri).estimated_rows == 40
    assert resolve_source(source, columns=["y"]).schema.names == ["y"]


# --- streaming, sizes, columns, uri ----------------------------------------------------------


def test_batches_are_bounded_and_skip_empty_files(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    _write(make_table(rows=5000), folder / "a.parquet")
    make_table(rows=0).to_parquet(folder / "b.parquet", index=False)  # zero rows: skipped
    _write(make_table(rows=2000, seed=1), folder / "c.parquet")
    source = resolve_source(folder)
    sizes = [batch.num_rows for batch in source.iter_batches(batch_rows=700)]
    assert max(sizes) <= 700 and min(sizes) > 0 and sum(sizes) == 7000
    assert source.estimated_rows == 7000
    assert len(source.files) == 2
    for batch in source.iter_batches(batch_rows=700):
        assert batch.schema.names == source.schema.names


def test_csv_batches_are_bounded(tmp_path):
    path = tmp_path / "big.csv"
    _write(make_table(rows=3000), path)
    sizes = [batch.num_rows for batch in resolve_source(path).iter_batches(batch_rows=256)]
    assert max(sizes) <= 256 and sum(sizes) == 3000


def test_int_and_float_files_promote_to_float(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), folder / "p0.parquet")
    pq.write_table(pa.table({"a": [0.5], "b": ["z"]}), folder / "p1.parquet")
    source = resolve_source(folder)
    assert source.schema.field("a").type == pa.float64()
    assert source.read_pandas()["a"].tolist() == [1.0, 2.0, 0.5]


def test_columns_select_and_check_only_those(tmp_path):
    folder = tmp_path / "drift"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1], "b": ["x"], "c": [1.0]}), folder / "p0.parquet")
    pq.write_table(pa.table({"a": [2], "b": [7], "c": [2.0]}), folder / "p1.parquet")
    source = resolve_source(folder, columns=["c", "a"])  # b drifts, but is not asked for
    assert source.schema.names == ["c", "a"]
    assert list(source.head(1).columns) == ["c", "a"]
    assert source.read_pandas(columns=["a"])["a"].tolist() == [1, 2]
    with pytest.raises(DataError, match=r"Column\(s\) \['zz'\] not in"):
        resolve_source(folder, columns=["zz"])
    with pytest.raises(DataError, match=r"Column\(s\) \['zz'\] not in"):
        source.read_pandas(columns=["zz"])


@pytest.mark.parametrize("kind", ["file", "folder", "glob", "uri"])
def test_uri_round_trip(tmp_path, parquet_folder, kind):
    given = {
        "file": parquet_folder / "part-0.parquet",
        "folder": parquet_folder,
        "glob": str(parquet_folder / "part-[01].parquet"),
        "uri": parquet_folder.as_uri(),
    }[kind]
    source = resolve_source(given)
    again = resolve_source(source.uri)
    assert os.path.isabs(source.uri) or source.uri.startswith("file://")
    assert again.description == source.description
    assert again.files == source.files
    assert again.schema == source.schema


def test_relative_path_gives_absolute_uri(parquet_folder, monkeypatch):
    monkeypatch.chdir(parquet_folder.parent)
    source = resolve_source("dataset")
    assert source.uri == str(parquet_folder)


# --- bad input: one DataError line each ------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"Data not found: .*Received: data='.*nope\.csv'"):
        resolve_source(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"Data not found: .*Received: data='.*\*\.parquet'"):
        resolve_source(str(tmp_path / "*.parquet"))
    with pytest.raises(DataError, match=r"Data not found"):
        resolve_source(f"delta:{tmp_path / 'no-table'}")


def test_unsupported_scheme():
    with pytest.raises(DataError, match=r"Unsupported URI scheme 'ftp://'; .*s3://.*gs://"):
        resolve_source("ftp://example.com/data.csv")


def test_invalid_uri():
    with pytest.raises(DataError, match=r"Invalid URI \(Missing bucket name"):
        resolve_source("s3:///data.parquet")


@pytest.mark.slow  # pyarrow's S3 client retries a refused connection for about 6 s
def test_unreachable_endpoint_names_endpoint_and_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    started = time.perf_counter()
    with pytest.raises(
        DataError,
        match=r"Cannot access the data \(.*\); check the endpoint \(AWS_ENDPOINT_URL\).*"
        r"credentials.*Received: data='s3://bucket/data/'",
    ):
        resolve_source("s3://bucket/data/")
    assert time.perf_counter() - started < 30


def test_empty_folder_and_files_without_rows(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match=r"No data files in .*names starting with"):
        resolve_source(folder)
    (folder / "a.csv").write_text("x,y\n")
    (folder / "b.csv").write_text("x,y\n")
    with pytest.raises(DataError, match=r"Data has no rows: all 2 data files are empty"):
        resolve_source(folder)
    (folder / "c.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="Data file has no rows"):
        resolve_source(folder / "a.csv")


def test_missing_column_names_file_and_column(tmp_path):
    folder = tmp_path / "drift"
    folder.mkdir()
    _write(make_table(rows=5), folder / "part-0.parquet")
    _write(make_table(rows=5).drop(columns="x2"), folder / "part-1.parquet")
    with pytest.raises(
        DataError, match=r"Schemas differ across files: column 'x2' is missing in file .*part-1"
    ):
        resolve_source(folder)


def test_extra_column_names_file_and_column(tmp_path):
    folder = tmp_path / "drift"
    folder.mkdir()
    _write(make_table(rows=5), folder / "part-0.csv")
    _write(make_table(rows=5).assign(extra=1), folder / "part-1.csv")
    with pytest.raises(
        DataError, match=r"column 'extra' of file .*part-1.csv is missing in file .*part-0.csv"
    ):
        resolve_source(folder)


def test_text_versus_number_names_both_files(tmp_path):
    folder = tmp_path / "drift"
    folder.mkdir()
    (folder / "p0.csv").write_text("a,b\n1,2\n")
    (folder / "p1.csv").write_text("a,b\nx,3\n")
    with pytest.raises(
        DataError, match=r"column 'a' is string in file .*p1.csv but int64 in file .*p0.csv"
    ):
        resolve_source(folder)


def test_mixed_formats(tmp_path):
    _write(make_table(rows=5), tmp_path / "a.csv")
    _write(make_table(rows=5), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"more than one format .*CSV: .*Parquet: "):
        resolve_source(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"Data file is empty \(0 bytes\)"),
        (b"PAR1" + b"garbage" * 50, r"Cannot parse data file as Parquet"),
        (bytes(range(256)) * 20, r"not text \(binary content\)"),
        (b"a,b\n1,2\n3,4,5,6\n", r"Cannot parse data file as CSV"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    name = "broken.parquet" if content.startswith(b"PAR1") else "broken.csv"
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        resolve_source(tmp_path / name)


def test_type_change_past_the_first_block_is_a_data_error(tmp_path):
    path = tmp_path / "late.csv"
    rows = "\n".join(str(i) for i in range(300_000))
    path.write_text(f"a\n{rows}\n1.5\n")  # past pyarrow's first 1 MB block
    source = resolve_source(path)
    with pytest.raises(DataError, match=r"Cannot parse data file as CSV .*convert the files"):
        for _ in source.iter_batches():
            pass


def test_bad_arguments(parquet_folder):
    with pytest.raises(UserInputError, match=r"Cannot read a table from a int"):
        resolve_source(42)
    source = resolve_source(parquet_folder)
    with pytest.raises(UserInputError, match=r"batch_rows must be a whole number >= 1"):
        next(source.iter_batches(batch_rows=0))
    assert source.head(0).empty and list(source.head(0).columns) == source.schema.names
    with pytest.raises(DataError, match=r"DataFrame has no rows"):
        resolve_source(pd.DataFrame({"a": []}))


# --- S3 (moto server) -----------------------------------------------------------------------


def test_s3_prefix_glob_and_missing(s3_bucket):  # noqa: F811
    import pyarrow.fs as pafs

    filesystem, _ = pafs.FileSystem.from_uri(s3_bucket.uri)
    for year, seed in [(2023, 0), (2024, 1)]:
        table = pa.Table.from_pandas(make_table(rows=30, seed=seed), preserve_index=False)
        path = f"{s3_bucket.name}/data/year={year}/part-0.parquet"
        pq.write_table(table, path, filesystem=filesystem)
    source = resolve_source(f"{s3_bucket.uri}/data/")
    assert source.estimated_rows == 60
    assert (
        source.description
        == f"Parquet dataset {s3_bucket.uri}/data/ (2 files, partitioned by year)"
    )
    assert sorted(source.read_pandas()["year"].unique()) == [2023, 2024]
    sizes = [batch.num_rows for batch in source.iter_batches(batch_rows=25)]
    assert max(sizes) <= 25 and sum(sizes) == 60
    assert source.spark_read.groups[0][1][0].startswith(f"s3a://{s3_bucket.name}/data/")
    assert resolve_source(source.uri).files == source.files
    matched = resolve_source(f"{s3_bucket.uri}/data/*/part-*.parquet")
    assert len(matched.files) == 2 and matched.estimated_rows == 60
    with pytest.raises(
        DataError, match=rf"Data not found: .*Received: data='{s3_bucket.uri}/missing/'"
    ):
        resolve_source(f"{s3_bucket.uri}/missing/")
    with pytest.raises(DataError, match=r"bucket or container 'no-such-bucket-x1' does not exist"):
        resolve_source("s3://no-such-bucket-x1/data/")


def test_s3_delta_table(s3_bucket):  # noqa: F811
    deltalake = pytest.importorskip("deltalake", reason="the delta extra is not installed")
    uri = f"{s3_bucket.uri}/tables/houses"
    deltalake.write_deltalake(uri, make_table(rows=33))
    for given in (uri, f"delta:{uri}"):
        source = resolve_source(given)
        assert source.uri == f"delta:{uri}"
        assert source.estimated_rows == 33
    assert len(_streamed(source, batch_rows=10)) == 33


# --- Spark ----------------------------------------------------------------------------------


@pytest.mark.spark
def test_spark_frame_streams_by_partition(spark):
    frame = make_table(rows=90)
    spark_frame = spark.createDataFrame(frame)  # local[2]: two partitions
    source = resolve_source(spark_frame)
    assert source.uri is None and source.files == [] and source.estimated_rows is None
    assert source.schema.names == list(frame.columns)
    assert source.to_spark(spark) is spark_frame
    sizes = [batch.num_rows for batch in source.iter_batches(batch_rows=20)]
    assert max(sizes) <= 20 and sum(sizes) == 90
    streamed = _streamed(source, columns=None, batch_rows=20).sort_values("y")
    collected = source.read_pandas().sort_values("y")
    pd.testing.assert_frame_equal(streamed.reset_index(drop=True), collected.reset_index(drop=True))
    assert list(source.head(4).columns) == list(frame.columns) and len(source.head(4)) == 4
    assert resolve_source(spark_frame, columns=["y"]).read_pandas().shape == (90, 1)


@pytest.mark.spark
def test_file_sources_to_spark(spark, tmp_path):
    for year in (2023, 2024):
        folder = tmp_path / "sales" / f"year={year}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), folder / "p0.parquet")
        pq.write_table(pa.table({"a": [0.5], "b": ["z"]}), folder / "p1.parquet")
    parquet = resolve_source(tmp_path / "sales").to_spark(spark)
    assert parquet.columns == ["a", "b", "year"]
    assert sorted(parquet.toPandas()["a"]) == [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]
    csv_path = tmp_path / "t.csv"
    _write(make_table(rows=40), csv_path)
    from_csv = resolve_source(csv_path, columns=["y", "color"]).to_spark(spark).toPandas()
    expected = pd.read_csv(csv_path)[["y", "color"]]
    assert from_csv["y"].tolist() == pytest.approx(expected["y"].tolist())
    assert from_csv["color"].isna().sum() == expected["color"].isna().sum()
    assert resolve_source(make_table(rows=12)).to_spark(spark).count() == 12
