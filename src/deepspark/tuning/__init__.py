"""Hyperparameter search: Optuna (TPE, median pruning) over ``TrainConfig`` settings, trials
scored on the validation split, locally or as Spark tasks.

``deepspark.tune`` (``deepspark.workflows.tune``) is the one call; this package holds its parts:
the search space (``space``), the study and objective (``study``), one trial (``trial``), the
search loop (``search``), trials on Spark (``spark_trials``) and the parent run's report
(``report``). Nothing here imports Optuna, Keras or Spark until it is used.
"""

from __future__ import annotations

from deepspark.tuning.space import (
    NOT_SEARCHABLE,
    Choice,
    FloatRange,
    IntRange,
    default_space,
    parse_spec,
)

__all__ = [
    "NOT_SEARCHABLE",
    "Choice",
    "FloatRange",
    "IntRange",
    "default_space",
    "parse_spec",
]
