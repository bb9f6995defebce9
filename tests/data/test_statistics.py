import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest

from deepspark.data._moments import merge_samples
from deepspark.data.encoding import encode_features, encode_target
from deepspark.data.schema import infer_schema, learn_vocabularies
from deepspark.data.statistics import NumericSummary, StreamingStatistics, TrainStatistics
from deepspark.errors import DataError, UserInputError
from deepspark.models.preprocessing import NumericStats, fit_numeric_stats
from deepspark.models.tabular_net import robust_statistics
from deepspark.training.fit import balanced_class_weights
from tests.conftest import make_table

TABLES = {"regression": (400, 0), "binary": (500, 1), "multiclass": (600, 2)}


def cleaned(task: str):
    rows, seed = TABLES[task]
    return infer_schema(make_table(rows=rows, seed=seed, task=task), "y", task=task)


def stream(schema, train: pd.DataFrame, chunk_rows: int, **options) -> TrainStatistics:
    statistics = StreamingStatistics(schema, **options)
    for start in range(0, len(train), chunk_rows):
        statistics.add(train.iloc[start : start + chunk_rows])
    return statistics.finish()


def numeric_stats(summary: NumericSummary) -> NumericStats:
    return NumericStats(**dataclasses.asdict(summary))


def assert_numeric_equal(summary: NumericSummary, expected: NumericStats) -> None:
    assert summary.log_columns == expected.log_columns
    assert summary.missing_columns == expected.missing_columns
    np.testing.assert_allclose(summary.mean, expected.mean, rtol=1e-9)
    np.testing.assert_allclose(summary.scale, expected.scale, rtol=1e-9)


@pytest.mark.parametrize("task", list(TABLES))
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_streamed_statistics_equal_the_in_memory_ones(task, chunk_rows):
    schema, train = cleaned(task)
    learned = stream(schema, train, chunk_rows)
    with_vocabularies = learn_vocabularies(schema, train)
    numeric_train = encode_features(train, with_vocabularies)["numeric"]
    expected = fit_numeric_stats(numeric_train)

    assert learned.rows == len(train)
    assert_numeric_equal(learned.numeric, expected)
    assert expected.log_columns == (2,) and expected.missing_columns == (1,)  # count; x2
    assert learned.vocabularies == {
        spec.name: spec.vocabulary for spec in with_vocabularies.categorical_specs
    }
    np.testing.assert_array_equal(learned.numeric_sample, numeric_train)
    assert learned.numeric_sample.dtype == np.float32
    stats = numeric_stats(learned.numeric)
    np.testing.assert_allclose(
        robust_statistics(stats, learned.numeric_sample),
        robust_statistics(stats, numeric_train),
        rtol=1e-9,
    )
    target = encode_target(train["y"], schema)
    if task == "regression":
        # Exact in float64; prepare_data's float32 mean / std agree to float32 precision.
        np.testing.assert_allclose(learned.target_center, target.astype(np.float64).mean(), 1e-9)
        np.testing.assert_allclose(learned.target_scale, target.astype(np.float64).std(), 1e-9)
        np.testing.assert_allclose(learned.target_center, float(target.mean()), rtol=1e-6)
        np.testing.assert_allclose(learned.target_scale, float(target.std()), rtol=1e-6)
        assert learned.class_counts == {}
    else:
        assert (learned.target_center, learned.target_scale) == (0.0, 1.0)
        assert learned.class_counts == train["y"].value_counts().to_dict()
        assert list(learned.class_counts) == list(schema.class_labels)
        counts = [learned.class_counts[label] for label in schema.class_labels]
        weights = {code: len(train) / (len(counts) * n) for code, n in enumerate(counts)}
        assert weights == pytest.approx(balanced_class_weights(target), rel=1e-12)


def test_constant_columns_and_a_column_empty_in_one_chunk():
    rows = 60
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "constant": np.full(rows, 0.1),
            "zero": np.zeros(rows),
            "late": np.where(np.arange(rows) < 20, np.nan, rng.lognormal(size=rows)),
            "level": np.where(np.arange(rows) % 3 == 0, "a", "b").astype(object),
            "y": rng.normal(size=rows),
        }
    )
    schema, train = infer_schema(frame, "y", task="regression")
    expected = fit_numeric_stats(encode_features(train, schema)["numeric"])
    for chunk_rows in (1, 7, 20, 1000):
        learned = stream(schema, train, chunk_rows)
        assert_numeric_equal(learned.numeric, expected)
        assert learned.numeric.scale[:2] == (1.0, 1.0)  # no spread: scale 1
    assert expected.missing_columns == (2,)


def test_log_decisions_near_the_skewness_threshold():
    # Exponential samples have a skewness near 2, the threshold: about half of these columns
    # are log-scaled, so a wrong third moment would flip some decisions.
    rng = np.random.default_rng(9)
    columns = {f"e{index}": rng.exponential(size=150) for index in range(40)}
    frame = pd.DataFrame({**columns, "y": rng.normal(size=150)})
    schema, train = infer_schema(frame, "y", task="regression")
    expected = fit_numeric_stats(encode_features(train, schema)["numeric"])
    assert 5 < len(expected.log_columns) < 35
    for chunk_rows in (1, 7, 64):
        assert_numeric_equal(stream(schema, train, chunk_rows).numeric, expected)


def test_a_column_missing_in_every_training_row():
    schema, train = infer_schema(make_table(rows=80), "y")
    train = train.assign(x2=np.nan)  # the training split can lack a column the table has
    numeric_train = encode_features(train, learn_vocabularies(schema, train))["numeric"]
    with pytest.warns(RuntimeWarning, match="Mean of empty slice|Degrees of freedom"):
        expected = fit_numeric_stats(numeric_train)
    learned = stream(schema, train, 9)
    assert np.isnan(learned.numeric.mean[1]) and np.isnan(expected.mean[1])
    assert learned.numeric.scale[1] == expected.scale[1] == 1.0
    assert learned.numeric.missing_columns == expected.missing_columns == (1,)
    np.testing.assert_allclose(learned.numeric.mean[::2], expected.mean[::2], rtol=1e-9)


def test_reservoir_stays_bounded_uniform_and_independent_of_chunks():
    rows, sample_rows = 5000, 50
    frame = pd.DataFrame({"index": np.arange(rows, dtype=float), "y": np.arange(rows) % 2})
    schema, train = infer_schema(frame, "y", task="binary")
    statistics = StreamingStatistics(schema, sample_rows=sample_rows, seed=3)
    for start in range(0, rows, 97):
        statistics.add(train.iloc[start : start + 97])
        sample = statistics.finish().numeric_sample
        assert len(sample) == min(start + 97, sample_rows)
    sample = statistics.finish().numeric_sample[:, 0]
    assert len(np.unique(sample)) == sample_rows  # rows of the data, each once
    for chunk_rows in (1, 13, 5000):
        again = stream(schema, train, chunk_rows, sample_rows=sample_rows, seed=3)
        np.testing.assert_array_equal(again.numeric_sample[:, 0], sample)
    other = stream(schema, train, 5000, sample_rows=sample_rows, seed=4)
    assert set(other.numeric_sample[:, 0]) != set(sample)
    # Uniform: over many seeds every part of the table is sampled about equally often.
    picks = np.concatenate(
        [
            stream(schema, train, 2500, sample_rows=100, seed=seed).numeric_sample[:, 0]
            for seed in range(40)
        ]
    )
    shares = np.bincount((picks // 1000).astype(int), minlength=5) / len(picks)
    np.testing.assert_allclose(shares, 0.2, atol=0.03)


def test_numeric_sample_is_all_rows_in_order_when_they_fit():
    schema, train = cleaned("binary")
    learned = stream(schema, train, 64, sample_rows=len(train))
    np.testing.assert_array_equal(learned.numeric_sample, encode_features(train, schema)["numeric"])
    smaller = stream(schema, train, 64, sample_rows=len(train) - 1)
    assert smaller.numeric_sample.shape == (len(train) - 1, 3)


def test_vocabularies_keep_the_top_levels_with_ties_in_level_order():
    levels = [f"L{index:04d}" for index in range(1200)]
    values = levels + levels[:300] + [None] * 5
    frame = pd.DataFrame({"c": pd.Series(values, dtype=object), "y": np.arange(len(values)) % 3})
    frame["y"] = frame["y"].astype(float) + 0.5 * np.arange(len(values))
    schema, train = infer_schema(frame, "y", task="regression")
    learned = stream(schema, train, 111)
    expected = learn_vocabularies(schema, train).categorical_specs[0].vocabulary
    assert learned.vocabularies["c"] == expected
    assert len(expected) == 1000 and expected[:2] == ("L0000", "L0001")


def test_only_categorical_features_and_errors():
    frame = pd.DataFrame({"c": ["a", "b", None, "a"] * 5, "y": ["u", "v"] * 10})
    schema, train = infer_schema(frame, "y", task="binary")
    learned = stream(schema, train, 3)
    assert learned.numeric is None and learned.numeric_sample is None
    assert learned.vocabularies == {"c": ("a", "b")}
    assert learned.class_counts == {"u": 10, "v": 10}
    statistics = StreamingStatistics(schema)
    with pytest.raises(DataError, match=r"No training rows to learn statistics from.*rows=0"):
        statistics.finish()
    with pytest.raises(UserInputError, match=r"Data is missing 1 column\(s\) the model needs: c"):
        statistics.add(train.drop(columns="c"))
    with pytest.raises(UserInputError, match=r"Training rows lack the target column 'y'"):
        statistics.add(train.drop(columns="y"))
    with pytest.raises(UserInputError, match=r"sample_rows must be a positive.*sample_rows=0"):
        StreamingStatistics(schema, sample_rows=0)


# Partition bounds (fractions of the rows): unequal sizes; from 3 partitions on, one is empty
# (the first one, then one in the middle).
PARTITIONS = {
    2: (0.0, 0.3, 1.0),
    3: (0.0, 0.0, 0.45, 1.0),
    7: (0.0, 0.002, 0.1, 0.1, 0.25, 0.5, 0.52, 1.0),
}


def partitions(train: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    bounds = [round(fraction * len(train)) for fraction in PARTITIONS[parts]]
    return [train.iloc[start:stop] for start, stop in zip(bounds, bounds[1:], strict=False)]


def partial(schema, rows: pd.DataFrame, chunk_rows: int = 7, **options) -> StreamingStatistics:
    """One partition's statistics, after a pickle round trip (as from a Spark executor)."""
    statistics = StreamingStatistics(schema, **options)
    for start in range(0, len(rows), chunk_rows):
        statistics.add(rows.iloc[start : start + chunk_rows])
    return pickle.loads(pickle.dumps(statistics))


def merged(schema, pieces: list[pd.DataFrame], **options) -> StreamingStatistics:
    first, *rest = [partial(schema, piece, **options) for piece in pieces]
    for other in rest:
        first.merge(other)
    return first


@pytest.mark.parametrize("task", list(TABLES))
@pytest.mark.parametrize("parts", list(PARTITIONS))
def test_merged_partitions_equal_one_pass_over_all_rows(task, parts):
    schema, train = cleaned(task)
    pieces = partitions(train, parts)
    sizes = [len(piece) for piece in pieces]
    assert sum(sizes) == len(train) and (min(sizes) == 0) == (parts > 2)
    assert len(set(sizes)) == parts  # unequal sizes
    learned = merged(schema, pieces).finish()
    single = stream(schema, train, 7)

    assert learned.rows == single.rows == len(train)
    assert_numeric_equal(learned.numeric, numeric_stats(single.numeric))
    assert learned.vocabularies == single.vocabularies
    assert learned.class_counts == single.class_counts
    assert list(learned.class_counts) == list(single.class_counts)
    np.testing.assert_allclose(learned.target_center, single.target_center, rtol=1e-9)
    np.testing.assert_allclose(learned.target_scale, single.target_scale, rtol=1e-9)
    np.testing.assert_array_equal(learned.numeric_sample, single.numeric_sample)
    # And the in-memory values, as the streamed statistics are checked above.
    with_vocabularies = learn_vocabularies(schema, train)
    numeric_train = encode_features(train, with_vocabularies)["numeric"]
    assert_numeric_equal(learned.numeric, fit_numeric_stats(numeric_train))
    assert learned.vocabularies == {
        spec.name: spec.vocabulary for spec in with_vocabularies.categorical_specs
    }
    np.testing.assert_array_equal(learned.numeric_sample, numeric_train)
    assert learned.numeric_sample.dtype == np.float32
    if task == "regression":
        target = encode_target(train["y"], schema).astype(np.float64)
        np.testing.assert_allclose(learned.target_center, target.mean(), rtol=1e-9)
        np.testing.assert_allclose(learned.target_scale, target.std(), rtol=1e-9)
    else:
        assert learned.class_counts == train["y"].value_counts().to_dict()


def test_merging_an_empty_partition_changes_nothing_and_adding_continues():
    schema, train = cleaned("regression")
    empty = pickle.loads(pickle.dumps(StreamingStatistics(schema, seed=5)))
    statistics = partial(schema, train.iloc[:250])
    before = pickle.dumps(statistics)
    statistics.merge(empty)
    assert pickle.dumps(statistics) == before  # state and random stream untouched
    assert empty.rows_ == 0
    # An empty object first (the driver's own partition had no rows) takes the other's state.
    empty.merge(statistics)
    empty.add(train.iloc[250:])
    statistics.add(train.iloc[250:])
    for learned in (empty.finish(), statistics.finish()):
        single = stream(schema, train, 1000)
        assert_numeric_equal(learned.numeric, numeric_stats(single.numeric))
        np.testing.assert_allclose(learned.target_center, single.target_center, rtol=1e-9)
        np.testing.assert_array_equal(learned.numeric_sample, single.numeric_sample)


def index_table(rows: int):
    frame = pd.DataFrame({"index": np.arange(rows, dtype=float), "y": np.arange(rows) % 2})
    return infer_schema(frame, "y", task="binary")


def test_merged_reservoir_stays_bounded_and_uniform():
    rows, sample_rows = 5000, 100
    schema, train = index_table(rows)
    pieces = partitions(train, 7)
    picks = []
    for seed in range(40):
        parts = [
            partial(schema, piece, 500, sample_rows=sample_rows, seed=[seed, index])
            for index, piece in enumerate(pieces)
        ]
        statistics, seen = parts[0], len(pieces[0])
        for other, piece in zip(parts[1:], pieces[1:], strict=True):
            statistics.merge(other)
            seen += len(piece)
            sample = statistics.finish().numeric_sample[:, 0]
            assert len(sample) == min(seen, sample_rows)
            assert len(np.unique(sample)) == len(sample)  # rows of the data, each once
        picks.append(sample)
    picks = np.concatenate(picks)
    shares = np.bincount((picks // 1000).astype(int), minlength=5) / len(picks)
    np.testing.assert_allclose(shares, 0.2, atol=0.03)
    # The 10-row partition (rows 0..9) is sampled at its share too: 10 / 5000 of the picks.
    assert 0 < np.sum(picks < 10) < 3 * len(picks) * 10 / rows
    # The seeded merge is reproducible.
    once, again = (merged(schema, pieces, sample_rows=sample_rows, seed=2) for _ in range(2))
    np.testing.assert_array_equal(once.finish().numeric_sample, again.finish().numeric_sample)


def test_merging_full_samples_that_overflow_keeps_each_row_equally_likely():
    # Three partitions that each fit in the sample (30, 60 and 50 rows) but not together.
    sample_rows = 100
    schema, train = index_table(140)
    pieces = [train.iloc[:30], train.iloc[30:90], train.iloc[90:]]
    counts = np.zeros(140)
    trials = 300
    for seed in range(trials):
        statistics = merged(schema, pieces, chunk_rows=1000, sample_rows=sample_rows, seed=seed)
        sample = statistics.finish().numeric_sample[:, 0].astype(int)
        assert len(sample) == sample_rows and len(set(sample)) == sample_rows
        counts[sample] += 1
    inclusion = counts / trials  # each row: 100 / 140 ~ 0.714
    for part in (slice(0, 30), slice(30, 90), slice(90, 140)):
        np.testing.assert_allclose(inclusion[part].mean(), sample_rows / 140, atol=0.03)
    # Adding rows after the merge continues the reservoir, still bounded.
    statistics.add(train)
    assert len(statistics.finish().numeric_sample) == sample_rows
    assert statistics.finish().rows == 280


def test_merging_different_schemas_or_samples_raises():
    schema, train = cleaned("regression")
    statistics = partial(schema, train.iloc[:100])
    other_schema, other_train = cleaned("binary")
    with pytest.raises(ValueError, match=r"another feature schema.*task='binary'.*'regression'"):
        statistics.merge(partial(other_schema, other_train.iloc[:100]))
    renamed = dataclasses.replace(schema, target="label")
    with pytest.raises(UserInputError, match=r"another feature schema.*target='label'"):
        statistics.merge(StreamingStatistics(renamed))
    with pytest.raises(UserInputError, match=r"another sample size.*sample_rows=10, expected"):
        statistics.merge(StreamingStatistics(schema, sample_rows=10))
    with pytest.raises(UserInputError, match=r"Can only merge.*other=dict"):
        statistics.merge({})
    with pytest.raises(UserInputError, match=r"this object itself"):
        statistics.merge(statistics)
    assert statistics.finish().rows == 100  # failed merges leave it unchanged


def test_samples_of_more_rows_than_numpys_hypergeometric_takes_still_merge():
    rng = np.random.default_rng(0)
    first, second = np.arange(100.0).reshape(-1, 1), np.arange(100.0, 200.0).reshape(-1, 1)
    sizes = [
        int(np.sum(merge_samples(first, 3 * 10**9, second, 10**9, capacity=100, rng=rng) < 100))
        for _ in range(200)
    ]
    assert np.mean(sizes) == pytest.approx(75, abs=1.5)  # 3 of every 4 rows are first's
