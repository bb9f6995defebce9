import numpy as np
import pandas as pd
import pytest

from deepspark.data.splits import hash_split, split_codes, split_frame
from deepspark.errors import DataError, UserInputError


def frame_of(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": np.arange(rows), "label": np.where(np.arange(rows) % 10 == 0, "a", "b")}
    )


def test_default_split_sizes_are_disjoint_and_complete():
    split = split_frame(frame_of(1000), val_fraction=0.15, test_fraction=0.15, seed=1)
    assert split.sizes() == {"train": 700, "val": 150, "test": 150}
    ids = [set(part["id"]) for part in (split.train, split.val, split.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 1000


def test_same_seed_same_split_other_seed_differs():
    first = split_frame(frame_of(200), val_fraction=0.2, test_fraction=0.2, seed=7)
    again = split_frame(frame_of(200), val_fraction=0.2, test_fraction=0.2, seed=7)
    other = split_frame(frame_of(200), val_fraction=0.2, test_fraction=0.2, seed=8)
    assert first.test["id"].tolist() == again.test["id"].tolist()
    assert first.test["id"].tolist() != other.test["id"].tolist()


def test_stratified_split_keeps_class_shares():
    frame = frame_of(1000)
    split = split_frame(
        frame, val_fraction=0.15, test_fraction=0.15, seed=3, stratify=frame["label"]
    )
    for part in (split.train, split.val, split.test):
        assert (part["label"] == "a").mean() == pytest.approx(0.1, abs=0.005)


def test_too_few_rows():
    with pytest.raises(
        DataError,
        match=r"Too few rows for the split: 9 rows give .* need at "
        r"least 10 train",
    ):
        split_frame(frame_of(9), val_fraction=0.15, test_fraction=0.15, seed=0)


# --- per-row hash splits ---------------------------------------------------------------------

FRACTIONS = {"val_fraction": 0.2, "test_fraction": 0.2}


def mixed_table(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """Columns whose dtype depends on the reader and on the batch: numbers, nullable ints, bools,
    text with missing values, and a mostly-numeric text column (zip codes)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "b_count": pd.array(rng.integers(0, 9, rows), dtype="Int64"),
            "a_value": rng.normal(size=rows).round(6),
            "flag": rng.random(rows) > 0.5,
            "color": rng.choice(["red", "green", "blue"], size=rows).astype(object),
            "zip": rng.integers(10000, 99999, rows).astype(str).astype(object),
            "score": rng.normal(size=rows),
        }
    )
    frame.loc[rng.choice(rows, rows // 10, replace=False), "b_count"] = pd.NA
    frame.loc[rng.choice(rows, rows // 10, replace=False), "color"] = None
    frame.loc[rng.choice(rows, rows // 10, replace=False), "score"] = np.nan
    frame.loc[rng.choice(rows, 5, replace=False), "zip"] = "A1-22"
    frame.loc[3, "a_value"] = -0.0
    return frame


def codes_of(rows, **options) -> np.ndarray:
    return split_codes(rows, seed=options.pop("seed", 11), **FRACTIONS, **options)


def test_split_codes_agree_across_readers(tmp_path):
    import pyarrow.csv as arrow_csv
    import pyarrow.parquet as pq

    frame = mixed_table()
    csv_path, parquet_path = tmp_path / "table.csv", tmp_path / "table.parquet"
    frame.to_csv(csv_path, index=False)
    frame.to_parquet(parquet_path, index=False)
    expected = codes_of(frame)
    readings = {
        "pandas csv": pd.read_csv(csv_path),
        "pandas csv, object dtype": pd.read_csv(csv_path, dtype={"color": object}),
        "pandas csv, arrow dtypes": pd.read_csv(csv_path, dtype_backend="pyarrow"),
        "arrow csv": arrow_csv.read_csv(csv_path),
        "parquet": pq.read_table(parquet_path),
        "parquet, dictionaries": pq.read_table(parquet_path, read_dictionary=["color", "zip"]),
        "pandas parquet": pd.read_parquet(parquet_path),
    }
    assert readings["arrow csv"].schema.field("color").type == "string"  # "" for missing cells
    assert str(readings["pandas csv"]["b_count"].dtype) == "float64"  # ints with nulls
    for name, rows in readings.items():
        np.testing.assert_array_equal(codes_of(rows), expected, err_msg=name)


def test_split_codes_ignore_string_and_categorical_dtypes():
    import pyarrow as pa

    frame = mixed_table()
    expected = codes_of(frame)
    as_category = frame.astype({"color": "category", "zip": "category"})
    as_string = frame.astype({"color": "string", "zip": "string"})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    large = table.cast(
        pa.schema(
            [
                pa.field(field.name, pa.large_string() if field.type == "string" else field.type)
                for field in table.schema
            ]
        )
    )
    dictionary = pa.Table.from_pandas(as_category, preserve_index=False)
    assert pa.types.is_dictionary(dictionary.schema.field("color").type)
    for name, rows in {
        "category": as_category,
        "string": as_string,
        "large_string": large,
        "dictionary": dictionary,
    }.items():
        np.testing.assert_array_equal(codes_of(rows), expected, err_msg=name)


def tiled(columns: dict, rows: int = 200) -> pd.DataFrame:
    """The values repeated over ``rows`` rows told apart by a ``row`` column: a value hashed
    differently then changes the split of about half the rows, not of one or two."""
    frame = pd.DataFrame(columns)
    frame = frame.iloc[np.arange(rows) % len(frame)].reset_index(drop=True)
    return frame.assign(row=np.arange(rows))


def test_split_codes_canonicalise_numbers_and_missing_values():
    expected = codes_of(tiled({"x": [0.0, 1.0, 2.0, np.nan], "t": ["a", None, "b", "c"]}))
    variants = {
        "-0.0, None": {"x": [-0.0, 1.0, 2.0, None], "t": ["a", np.nan, "b", "c"]},
        "Int64, pd.NA": {
            "x": pd.array([0, 1, 2, None], dtype="Int64"),
            "t": ["a", pd.NA, "b", "c"],
        },
        "numeric text": {"x": ["0", "1.0", "2", ""], "t": ["a", "", "b", "c"]},
        "mixed objects": {
            "x": pd.Series([0, "1", 2.0, None], dtype=object),
            "t": ["a", "NA", "b", "c"],
        },
        "string dtype": {"x": [0, 1, 2, None], "t": pd.array(["a", None, "b", "c"], "string")},
    }
    for name, columns in variants.items():
        np.testing.assert_array_equal(codes_of(tiled(columns)), expected, err_msg=name)
    as_numbers = codes_of(tiled({"x": [1.0, 0.0]}))
    np.testing.assert_array_equal(codes_of(tiled({"x": [True, False]})), as_numbers)
    np.testing.assert_array_equal(codes_of(tiled({"x": ["True", "false"]})), as_numbers)
    assert (codes_of(tiled({"x": ["yes", "no"]})) != as_numbers).any()
    assert (codes_of(tiled({"x": [1.0, 0.5]})) != as_numbers).any()


def test_split_codes_do_not_depend_on_batching(tmp_path):
    import pyarrow as pa
    import pyarrow.csv as arrow_csv

    frame = mixed_table(rows=120)
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    expected = codes_of(frame)
    for size in (1, 7, 1000):
        # pandas infers dtypes per chunk: a 1-row chunk reads a zip code as an int, a bool as bool
        chunks = pd.read_csv(path, chunksize=size)
        np.testing.assert_array_equal(np.concatenate([codes_of(part) for part in chunks]), expected)
        batches = pa.Table.from_pandas(frame, preserve_index=False).to_batches(size)
        np.testing.assert_array_equal(
            np.concatenate([codes_of(batch) for batch in batches]), expected
        )
    reader = arrow_csv.open_csv(  # Arrow infers types from the first block only
        path,
        read_options=arrow_csv.ReadOptions(block_size=512),
        convert_options=arrow_csv.ConvertOptions(column_types={"zip": pa.string()}),
    )
    streamed = np.concatenate([codes_of(batch) for batch in reader])
    np.testing.assert_array_equal(streamed, expected)


def test_split_codes_are_the_same_for_every_world_size():
    frame = mixed_table(rows=200)
    expected = codes_of(frame)
    for world_size in (1, 2, 3, 8):
        for rank in range(world_size):
            shard = frame.iloc[rank::world_size]
            np.testing.assert_array_equal(codes_of(shard), expected[rank::world_size])


def test_split_codes_follow_the_fractions_and_the_seed():
    rows = 100_000
    frame = pd.DataFrame({"id": np.arange(rows), "group": np.arange(rows) % 7})
    codes = split_codes(frame, seed=3, val_fraction=0.15, test_fraction=0.1)
    assert codes.dtype == np.int8
    shares = np.bincount(codes, minlength=3) / rows
    np.testing.assert_allclose(shares, [0.75, 0.15, 0.1], atol=0.004)
    again = split_codes(frame, seed=3, val_fraction=0.15, test_fraction=0.1)
    other = split_codes(frame, seed=4, val_fraction=0.15, test_fraction=0.1)
    np.testing.assert_array_equal(codes, again)
    assert np.mean(codes != other) > 0.3  # independent splits disagree on ~40% of rows
    no_test = split_codes(frame, seed=3, val_fraction=0.15, test_fraction=0.0)
    np.testing.assert_array_equal(no_test == 1, codes == 1)  # val rows do not move
    assert not (no_test == 2).any()


def test_duplicate_rows_share_a_split():
    base = mixed_table(rows=50)
    frame = pd.concat([base, base.sample(frac=1.0, random_state=0), base], ignore_index=True)
    codes = codes_of(frame)
    np.testing.assert_array_equal(codes[:50], codes[100:])
    by_row = pd.Series(codes).groupby(pd.util.hash_pandas_object(frame, index=False)).nunique()
    assert (by_row == 1).all()


def test_split_codes_use_only_the_given_columns_in_name_order():
    frame = mixed_table(rows=100)
    np.testing.assert_array_equal(codes_of(frame[frame.columns[::-1]]), codes_of(frame))
    changed = frame.assign(score=frame["score"] + 1)
    keys = ["a_value", "color"]
    np.testing.assert_array_equal(codes_of(changed, columns=keys), codes_of(frame, columns=keys))
    np.testing.assert_array_equal(
        codes_of(frame, columns=keys[::-1]), codes_of(frame, columns=keys)
    )
    assert (codes_of(changed) != codes_of(frame)).any()
    swapped = frame.rename(columns={"a_value": "color", "color": "a_value"})
    assert (codes_of(swapped, columns=keys) != codes_of(frame, columns=keys)).any()


def test_split_codes_reject_bad_fractions_and_columns():
    frame = frame_of(20)
    with pytest.raises(UserInputError, match=r"Invalid split fractions.*test_fraction=0.6"):
        split_codes(frame, seed=0, val_fraction=0.5, test_fraction=0.6)
    with pytest.raises(UserInputError, match=r"Split column\(s\) not found: nope; choose from"):
        split_codes(frame, seed=0, val_fraction=0.1, test_fraction=0.1, columns=["id", "nope"])


def test_hash_split_keeps_row_order_and_checks_sizes():
    frame = frame_of(1000)
    split = hash_split(frame, seed=5, val_fraction=0.15, test_fraction=0.15)
    codes = split_codes(frame, seed=5, val_fraction=0.15, test_fraction=0.15)
    for part, code in ((split.train, 0), (split.val, 1), (split.test, 2)):
        assert part["id"].tolist() == np.flatnonzero(codes == code).tolist()
        assert part.index.tolist() == list(range(len(part)))
    assert sum(split.sizes().values()) == 1000
    with pytest.raises(DataError, match=r"Too few rows for the split: 9 rows give"):
        hash_split(frame_of(9), seed=0, val_fraction=0.15, test_fraction=0.15)
