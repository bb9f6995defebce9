import pandas as pd
import pytest

from deepspark.data.readers import read_table
from deepspark.errors import DataError
from tests.conftest import make_table


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_reads_each_format(tmp_path, suffix):
    frame = make_table(rows=30)
    path = tmp_path / f"table{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    loaded = read_table(path)
    assert list(loaded.columns) == list(frame.columns)
    assert len(loaded) == 30
    assert loaded["x1"].to_numpy() == pytest.approx(frame["x1"].to_numpy())


def test_builtin_diabetes_is_offline():
    frame = read_table("diabetes")
    assert len(frame) == 442
    assert "disease_progression" in frame.columns


def test_missing_file_names_path_and_builtins(tmp_path):
    with pytest.raises(
        DataError,
        match=r"Data not found: .*built-in dataset \(diabetes, "
        r"california\).*Received: data='.*nope.csv'",
    ):
        read_table(tmp_path / "nope.csv")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"Data file is empty \(0 bytes\)"):
        read_table(path)


def test_header_only_file(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,c\n")
    with pytest.raises(DataError, match="Data file has no rows"):
        read_table(path)


def test_binary_junk(tmp_path):
    path = tmp_path / "junk.csv"
    path.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(DataError, match=r"not text \(binary content\)"):
        read_table(path)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"garbage" * 50)
    with pytest.raises(DataError, match="Cannot parse data file as Parquet"):
        read_table(path)


def test_parquet_folder(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    make_table(rows=20).to_parquet(folder / "part-0.parquet", index=False)
    make_table(rows=10, seed=1).to_parquet(folder / "part-1.parquet", index=False)
    assert len(read_table(folder)) == 30


def test_ragged_csv_is_a_parse_error(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DataError, match="Cannot parse data file as CSV"):
        read_table(path)


def test_tsv(tmp_path):
    path = tmp_path / "t.tsv"
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_csv(path, sep="\t", index=False)
    assert list(read_table(path).columns) == ["a", "b"]
