"""Reading tables, inferring the feature schema, splitting, and encoding raw columns."""

from deepspark.data.readers import BUILTIN_DATASETS, read_table
from deepspark.data.schema import FeatureSchema, FeatureSpec, infer_schema
from deepspark.data.splits import DataSplit, split_frame

__all__ = [
    "BUILTIN_DATASETS",
    "DataSplit",
    "FeatureSchema",
    "FeatureSpec",
    "infer_schema",
    "read_table",
    "split_frame",
]
