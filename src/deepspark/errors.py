"""Exceptions raised by deepspark.

The tree::

    DeepsparkError
    ├── UserInputError (also ValueError)        bad data, option or path: the user can fix it
    │   ├── DataError                           a data source that cannot be used as given
    │   ├── ModelNotFoundError                  a model URI that resolves to nothing
    │   └── TrainingDivergedError               the loss became NaN or infinite
    ├── MissingDependencyError (also ImportError)  an optional extra is not installed
    ├── BackendError                            Keras runs on a backend deepspark cannot use
    └── WorkerTimeoutError                      distributed ranks late to start or stuck

The CLI maps ``UserInputError`` and ``MissingDependencyError`` to exit code 2 with one line on
stderr; ``WorkerTimeoutError`` exits 1 with its line (it names the ranks and the likely cause);
anything else is an internal error (exit code 1).
"""

from __future__ import annotations


class DeepsparkError(Exception):
    """Base class of every error deepspark raises on purpose."""


class UserInputError(DeepsparkError, ValueError):
    """Something the user gave (data, option, path) cannot be used; the message says the fix."""


class DataError(UserInputError):
    """A data source is missing, unreadable, empty or has unusable columns."""


class ModelNotFoundError(UserInputError):
    """A model URI does not point at a deepspark model."""


class TrainingDivergedError(UserInputError):
    """The training loss became NaN or infinite."""


class MissingDependencyError(DeepsparkError, ImportError):
    """An optional dependency is needed for this feature and is not installed."""


class BackendError(DeepsparkError):
    """Keras is configured with a backend other than jax or torch."""


class WorkerTimeoutError(DeepsparkError):
    """Distributed ranks did not connect within the startup timeout, or made no progress within
    the watchdog's time; the message names them and the likely cause. Not retried."""
