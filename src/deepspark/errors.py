"""Exceptions raised by deepspark.

The tree::

    DeepsparkError
    ├── UserInputError (also ValueError)        bad data, option or path: the user can fix it
    │   ├── DataError                           a data source that cannot be used as given
    │   ├── ModelNotFoundError                  a model URI that resolves to nothing
    │   ├── TrainingDivergedError               the loss became NaN or infinite
    │   ├── StorageFullError                    the disk filled up while writing a file
    │   ├── UntrustedModelError                 a model file holds code the user did not trust
    │   └── TrackingUnavailableError            the MLflow tracking server does not answer
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


class UntrustedModelError(UserInputError):
    """A model file holds code, or names classes, that a safe load does not run; the message
    names the opt-in (``DEEPSPARK_TRUST_MODEL_CODE=1``) for files from a trusted source."""


class StorageFullError(UserInputError):
    """The disk (or quota) filled up while deepspark wrote a file; the message names what was
    written, where, and the fix. The file being written was removed; what was there before is
    kept (the last complete checkpoint, an existing output).

    Attributes:
        what: What was being written (a file name, "the output", ...).
        where: The folder or URI it was written to.
        fix: What the user can do (free space there, or the option that chooses another place).
    """

    what: str = ""
    where: str = ""
    fix: str = ""

    @staticmethod
    def caused(error: BaseException | None) -> bool:
        """Whether ``error``, or an exception it was raised from, says the disk is full
        (``ENOSPC``, ``EDQUOT``, or their text from pyarrow, h5py or zip writers)."""
        import errno

        seen = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                return True
            text = str(error)
            if "No space left on device" in text or "Disk quota exceeded" in text:
                return True
            error = error.__cause__ or error.__context__
        return False

    @classmethod
    def writing(cls, what: str, where: str, fix: str) -> StorageFullError:
        """The error for a full disk while writing ``what`` to ``where``; ``fix`` says which
        space to free or which option to change."""
        error = cls(
            f"The disk is full: could not write {what} to {where} (No space left on device); "
            f"{fix}. Received: path={where!r}"
        )
        error.what, error.where, error.fix = what, where, fix
        return error


class TrackingUnavailableError(UserInputError):
    """The MLflow tracking server could not be reached; the message says what was kept and how
    to log it once the server is back (``deepspark sync RUN_ID``)."""
