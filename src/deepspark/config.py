"""Run settings: one frozen dataclass, validated in one place, loadable from a TOML file."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepspark.errors import UserInputError

TASKS = ("regression", "binary", "multiclass")
ACTIVATIONS = (
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "prelu",
    "elu",
    "selu",
    "gelu",
    "swish",
    "linear",
)
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
REGRESSION_LOSSES = ("mse", "mae", "huber")
CLASSIFICATION_LOSSES = ("crossentropy",)
CATEGORICAL_ENCODINGS = ("auto", "one_hot", "embedding")
DISTRIBUTED_LAUNCHERS = ("local", "spark", "horovod")
# How distributed ranks communicate (not the Keras backend, which is ``keras_backend``).
COLLECTIVES = ("jax", "torch", "horovod")
KERAS_BACKENDS = ("jax", "torch")
ON_BAD_IMAGE = ("skip", "fail")
CLASS_WEIGHTS = ("balanced",)
NUMERIC_EMBEDDINGS = ("periodic", "none")
LR_SCHEDULES = ("plateau", "cosine", "constant")
# deepspark's rule for registered model names: what MLflow accepts, less what breaks a
# ``models:/NAME@alias`` or ``models:/NAME/3`` URI ('/', ':', '@', spaces).
REGISTERED_NAME_PATTERN = re.compile(r"^\w[\w.\-]{0,255}$")
# MLflow's alias rule; ``latest`` and ``v<digits>`` are reserved (version references).
ALIAS_PATTERN = re.compile(r"^[\w\-]{1,255}$")
RESERVED_ALIAS_PATTERN = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)


def _invalid(name: str, problem: str, value: Any) -> UserInputError:
    option = "--" + name.replace("_", "-")
    return UserInputError(f"Invalid {option}: {problem}. Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Logged to MLflow as params.

    Args:
        data: A file path (CSV, Parquet, JSON lines) or a built-in dataset name.
        target: The column to predict.
        task: ``regression``, ``binary`` or ``multiclass``; ``None`` infers it from the target.
        exclude: Columns that are not features (ids, leaks).
        hidden: Units of each hidden layer.
        activation: Hidden-layer activation, one of ``ACTIVATIONS`` (``linear``: none, so an
            MLP is a linear model and the result reports its coefficients).
        dropout: Dropout rate after each hidden layer.
        batch_norm: Batch normalization after each hidden layer (dense or convolution);
            ``None``: the model's default (off for the MLP, on for the CNN).
        optimizer: One of ``OPTIMIZERS``.
        lr: Learning rate; ``None`` uses the optimizer's usual default.
        loss: ``mse``, ``mae`` or ``huber`` for regression; ``None`` picks the task's default.
        epochs: Most epochs to train; early stopping usually ends sooner.
        batch_size: Rows per gradient step; ``None``: 64, and for tables of more than
            100,000 rows about rows / 500 (a power of two up to 4096), with the default
            learning rate times sqrt(batch size / 256) (at most 4x), so a 10-million-row
            epoch takes minutes, not hours.
        val_fraction: Share of rows for the validation split (early stopping, selection).
        test_fraction: Share of rows for the test split, scored once at the end.
        seed: Seeds the split, the weight initialisation and the shuffling.
        patience: Epochs without validation improvement before early stopping; ``None``: 30
            for tables, 10 for images (an image epoch costs far more, and the learning rate
            halving after a third of it must come within a few epochs).
        reduce_lr: Halve the learning rate when validation loss stalls for a third of
            ``patience`` (at least 2 epochs).
        categorical_encoding: ``one_hot``, ``embedding`` or ``auto`` (embedding above 16 levels).
        experiment: MLflow experiment name.
        run_name: MLflow run name.
        tracking_uri: MLflow tracking URI; ``None`` keeps MLflow's default.
        checkpoint_dir: Where per-epoch checkpoints go; ``None``: ``$DEEPSPARK_CHECKPOINT_DIR``,
            else the store's ``checkpoints`` folder.
        store: Where encoded shards, checkpoints and the rank-0 model live (``s3://bucket/prefix``,
            ``hdfs://...``, a shared mount, any pyarrow filesystem URI); ``None``:
            ``$DEEPSPARK_STORE`` or ``./.deepspark/store``. A cluster run needs one every host
            can reach, and checks that before it starts.
        max_memory_mb: Encoded training data up to this many MB is held in memory; beyond it,
            it is streamed from the store a batch at a time. ``None``: a quarter of the machine's
            memory.
        workers: Data-parallel workers; above 1 (or with ``launcher``) training is distributed
            and ``batch_size`` is per worker.
        launcher: ``local``, ``spark`` or ``horovod``; ``None`` is ``local`` when ``workers > 1``.
        collectives: How ranks communicate: ``jax`` (jax.distributed, the JAX backend),
            ``torch`` (torch.distributed) or ``horovod`` (both on the torch backend); ``None``
            follows the Keras backend and the launcher. (Formerly ``backend``.)
        max_restarts: Times a distributed job starts again from the last checkpoint after a
            worker dies.
        startup_timeout: Seconds every rank has to start and connect before the run fails
            naming the missing ranks (``None``: ``$DEEPSPARK_STARTUP_TIMEOUT``, else 300;
            0: wait forever).
        watchdog: Seconds a rank may go without reporting a batch before the run fails naming
            it (``None``: ``$DEEPSPARK_WATCHDOG``, else 1800; 0: off).
        scale_lr: Multiply the learning rate by ``workers`` (the global batch is that much larger).
        warmup_epochs: Epochs over which the rate rises from its single-worker value to the scaled
            one (0: none).
        keras_backend: ``jax`` or ``torch``; ``None`` keeps ``KERAS_BACKEND`` (default ``jax``).
        image_size: ``(height, width)`` images are resized to (image data); ``None``: the first
            training image's shorter side, at most 128, square.
        filters: Filters of each CNN conv block (each block halves the resolution).
        augment: Random flips, rotations, zoom and contrast while training (image data).
        on_bad_image: ``skip`` (count, list and leave out corrupt or non-image files) or
            ``fail`` (stop at the first).
        base: A pretrained keras.applications network (``mobilenet_v2``, ``resnet50``...): the
            model is that base (frozen) with a new head (transfer learning; image data).
        weights: The base's weights: ``imagenet`` (Keras' download) or a local weights file.
        base_options: Constructor options of the base, e.g. ``{"alpha": 0.35}``.
        fine_tune_layers: After the head is trained, unfreeze the top N layers of the base
            (or ``all``) and train on at ``fine_tune_lr``; ``None``: no fine-tuning phase.
            BatchNorm layers stay in inference mode either way.
        fine_tune_lr: Learning rate of the fine-tuning phase (default a tenth of the first
            phase's).
        fine_tune_epochs: Most epochs of the fine-tuning phase (early stopping may end sooner).
        class_weight: ``balanced``: weight each class's loss by ``rows / (classes x rows of the
            class)``; ``None``: every row counts the same.
        ensemble_size: Members of the ``tabular_net`` ensemble (``k`` heads sharing most
            weights, averaged at prediction); 1 is a single network.
        numeric_embedding: How ``tabular_net`` feeds numbers to its first layer: ``periodic``
            (learned periodic embeddings next to the scaled value) or ``none`` (the scaled value).
        embedding_sigma: Standard deviation of the periodic embeddings' initial frequencies (in
            cycles per robust-scaled unit; the frequencies are learned from there): small values
            start smooth. ``None`` (auto): see ``default_embedding_sigma`` (0.1 for a table of at
            most ``SMOOTH_EMBEDDING_ROWS`` rows, 3.0 above). Logged resolved.
        weight_decay: Decoupled weight decay of the optimizer (``None``: the optimizer's own
            default, none except 0.004 for ``adamw``).
        lr_schedule: ``plateau`` (the rate halves when validation loss stalls, with
            ``reduce_lr``), ``cosine`` (cosine decay to 0 over the ``epochs`` budget; set
            ``patience`` to ``epochs`` to train the whole budget and keep the best epoch) or
            ``constant``.
        bagging: Members of a bagged k-fold ensemble of a table held in memory (2-20): each
            trains on ``bagging - 1`` folds of the training + validation rows with early stopping
            on its own fold; validation metrics are out-of-fold; the test split is scored once by
            the averaged model (one artifact). 1: one network. ``None`` (auto):
            ``AUTO_BAGGING_MEMBERS`` for a small table (see ``default_bagging``: at most
            ``AUTO_BAGGING_ROWS`` training + validation rows, or ``$DEEPSPARK_AUTO_BAGGING_ROWS``;
            0 never bags by default) held in memory, trained by ``train`` with the default
            model in one process without callbacks; else 1. Logged resolved.
        register: After a successful run, register the logged model as a new version of this
            registered model (MLflow model registry); ``None``: no registration.
        aliases: Aliases to point at that new version (``champion``...; MLflow 3 aliases, not
            the deprecated stages); needs ``register``.
        tensorboard: A folder for TensorBoard event files (scalars per epoch: every ``train_*``
            and ``val_*`` metric and the learning rate), also logged to the run under
            ``tensorboard/``; ``None``: none written.
        keep_checkpoints: Log the best and the last epoch's model as run artifacts
            (``checkpoints/best.keras``, ``checkpoints/last.keras``); load them with
            ``deepspark.load_checkpoint(run_id, which="best")``.
    """

    data: str
    target: str | None = None
    task: str | None = None
    exclude: tuple[str, ...] = ()
    hidden: tuple[int, ...] = (256, 128, 64)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool | None = None
    optimizer: str = "adam"
    lr: float | None = None
    loss: str | None = None
    epochs: int = 300
    batch_size: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    patience: int | None = None
    reduce_lr: bool = True
    categorical_encoding: str = "auto"
    experiment: str = "deepspark"
    run_name: str | None = None
    tracking_uri: str | None = None
    checkpoint_dir: str | None = None
    store: str | None = None
    max_memory_mb: float | None = None
    workers: int = 1
    launcher: str | None = None
    collectives: str | None = None
    max_restarts: int = 2
    startup_timeout: float | None = None
    watchdog: float | None = None
    scale_lr: bool = True
    warmup_epochs: int = 0
    keras_backend: str | None = None
    image_size: tuple[int, int] | None = None
    filters: tuple[int, ...] = (32, 64, 128)
    augment: bool = False
    on_bad_image: str = "skip"
    base: str | None = None
    weights: str | None = "imagenet"
    base_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    fine_tune_layers: int | str | None = None
    fine_tune_lr: float | None = None
    fine_tune_epochs: int = 10
    class_weight: str | None = None
    ensemble_size: int = 8
    numeric_embedding: str = "periodic"
    embedding_sigma: float | None = None
    weight_decay: float | None = None
    lr_schedule: str = "plateau"
    bagging: int | None = None
    register: str | None = None
    aliases: tuple[str, ...] = ()
    tensorboard: str | None = None
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        validate_config(self)

    def to_params(self) -> dict[str, str]:
        """The settings as flat MLflow params (strings)."""
        params = {}
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, tuple | list):
                value = ",".join(str(item) for item in value)
            elif isinstance(value, dict):
                value = ",".join(f"{key}={item}" for key, item in value.items())
            params[name] = "" if value is None else str(value)
        return params

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (lists for tuples)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> TrainConfig:
        """The inverse of ``to_dict`` (lists back to tuples; an old ``backend`` key is read as
        ``collectives``)."""
        document = _renamed_settings(document, warn=False)
        return cls(
            **{
                key: tuple(value) if isinstance(value, list) else value
                for key, value in document.items()
            }
        )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _invalid(name, f"unknown value; valid values are {', '.join(choices)}", value)


def _check_fraction(name: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, int | float) and math.isfinite(value) and low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise _invalid(name, f"must be a fraction in {bound}", value)


#: The patience each kind starts from (``ModelKind.default_patience``); ``tabular``'s is also
#: the fit loop's own default.
DEFAULT_PATIENCE = {"tabular": 30, "image": 10}


DEFAULT_BATCH_SIZE = 64
LARGE_TABLE_ROWS = 100_000
_ROWS_PER_BATCH_STEP = 500
MAX_DEFAULT_BATCH_SIZE = 4096


def default_batch_size(kind: str, rows: int | None) -> int:
    """64; for a table of more than ``LARGE_TABLE_ROWS`` rows, the power of two nearest
    ``rows / 500``, at most 4096 (larger data, larger batches, as TabM's recipes do). The
    kind says whether its data gets larger batches (``ModelKind.large_table_batches``)."""
    from deepspark.models.kinds import kind_named

    if not kind_named(kind).large_table_batches or rows is None or rows <= LARGE_TABLE_ROWS:
        return DEFAULT_BATCH_SIZE
    size = 2 ** round(math.log2(rows / _ROWS_PER_BATCH_STEP))
    return int(min(MAX_DEFAULT_BATCH_SIZE, max(DEFAULT_BATCH_SIZE, size)))


#: Members of the bagged ensemble a small table gets by default (``bagging=None``): each trains
#: on 4 of 5 folds. Measured with ``benchmarks/bench_tabular_suite.py`` (5 folds; README,
#: bagging), 5 members against 3: better on 10 of the 12 tables under 2,000 rows at seed 42 (mean
#: 0.837x -> 0.823x the better tree), on 4 of 8 at seed 7 (0.771x -> 0.783x); the worst table,
#: grunfeld, 1.050x -> 1.031x averaged over both seeds.
AUTO_BAGGING_MEMBERS = 5
#: Most training + validation rows a table may have to be bagged by default. Measured with
#: ``benchmarks/bench_tabular_suite.py`` (3 folds, K=3; README, bagging): bagged / one network's
#: error 0.924 on 500 rows of California (333 training + validation rows), 0.976 on 1,000 (667),
#: 0.982 on 2,000 (1,333), every fold better, each bagged training well inside the 2-minute
#: budget of a table under 2,000 rows (62 s against 30 s for one network on 2 shared cores).
AUTO_BAGGING_ROWS = 2_000
#: Overrides ``AUTO_BAGGING_ROWS`` (a whole number of rows; 0: never bag by default).
AUTO_BAGGING_ROWS_ENV = "DEEPSPARK_AUTO_BAGGING_ROWS"


def auto_bagging_rows() -> int:
    """The row threshold of default bagging: ``$DEEPSPARK_AUTO_BAGGING_ROWS`` when set, else
    ``AUTO_BAGGING_ROWS``.

    Raises:
        UserInputError: The variable is not a whole number of rows (0 or more).
    """
    import os

    text = os.environ.get(AUTO_BAGGING_ROWS_ENV, "").strip()
    if not text:
        return AUTO_BAGGING_ROWS
    try:
        rows = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        rows = -1
    if rows < 0:
        raise UserInputError(
            f"{AUTO_BAGGING_ROWS_ENV} must be a whole number of rows (0: never bag by default), "
            f"such as 2000. Received: {AUTO_BAGGING_ROWS_ENV}={text!r}"
        )
    return rows


def default_bagging(config: TrainConfig, kind: str, *, pooled_rows: int | None) -> int:
    """What ``bagging=None`` (auto) resolves to: ``AUTO_BAGGING_MEMBERS`` when the kind's data
    can be bagged (``ModelKind.supports_bagging``), the settings keep the kind's default
    builder (not the linear ``mlp`` of ``activation="linear"``), training runs in one process
    (no ``workers`` > 1, no ``launcher``) and ``pooled_rows``, the training + validation rows
    of a table held in memory, are at most ``auto_bagging_rows()``; else 1.

    ``pooled_rows`` is ``None`` where the caller does not bag by default: a streamed table, a
    model or callbacks the user gave (``train`` decides), ``tune``'s trials, ``lr_find``.
    An explicit ``bagging`` is never changed here.
    """
    from deepspark.models.builders import default_model
    from deepspark.models.kinds import kind_named

    if config.bagging is not None:
        return config.bagging
    if pooled_rows is None or not kind_named(kind).supports_bagging:
        return 1
    if default_model(kind, config) != kind_named(kind).default_builder:
        return 1
    if config.workers > 1 or config.launcher is not None:
        return 1
    threshold = auto_bagging_rows()
    small = threshold > 0 and pooled_rows <= threshold
    return AUTO_BAGGING_MEMBERS if small else 1


#: ``embedding_sigma`` of a table of at most ``SMOOTH_EMBEDDING_ROWS`` rows: smooth embeddings,
#: which small tables need (the whole suite of tables under 2,000 rows was measured with them).
SMALL_TABLE_EMBEDDING_SIGMA = 0.1
#: ``embedding_sigma`` of a larger table (or a streamed one of unknown size): finer detail where
#: there are rows to learn it. Measured with ``benchmarks/bench_tabular_suite.py`` (5 folds,
#: one network; README), 0.1 / 1.0 / 3.0: randhie (20,000 rows) 1.066x / 1.040x / 1.031x the
#: better tree at seed 42, - / 1.060x / 1.038x at seed 7; fair (6,366) 0.973x / 0.964x / 0.973x
#: at seed 42, - / 0.974x / 0.975x at seed 7; the whole California table (20,640 rows), two
#: folds at seed 42: RMSE 48,942 and 48,214 / 49,310 and 47,657 / 48,492 and 46,598.
LARGE_TABLE_EMBEDDING_SIGMA = 3.0
SMOOTH_EMBEDDING_ROWS = 3_000


def default_embedding_sigma(rows: int | None) -> float:
    """What ``embedding_sigma=None`` (auto) resolves to for a table of ``rows`` rows:
    ``SMALL_TABLE_EMBEDDING_SIGMA`` up to ``SMOOTH_EMBEDDING_ROWS`` rows, else (and when the
    size is unknown) ``LARGE_TABLE_EMBEDDING_SIGMA``."""
    if rows is not None and rows <= SMOOTH_EMBEDDING_ROWS:
        return SMALL_TABLE_EMBEDDING_SIGMA
    return LARGE_TABLE_EMBEDDING_SIGMA


def with_data_defaults(
    config: TrainConfig,
    kind: str,
    *,
    rows: int | None = None,
    pooled_rows: int | None = None,
) -> TrainConfig:
    """``config`` with the defaults that depend on the kind of data (``tabular`` or ``image``)
    and its size filled in: ``patience`` (the kind's ``default_patience``), ``batch_size``
    (see ``default_batch_size``), ``bagging`` (see ``default_bagging``; ``pooled_rows``:
    the training + validation rows of an in-memory table that may be bagged by default) and, for
    tables, ``embedding_sigma`` (see ``default_embedding_sigma``; ``rows``: the table's rows)."""
    from deepspark.models.kinds import kind_named

    changes = {}
    if config.patience is None:
        changes["patience"] = kind_named(kind).default_patience
    if config.batch_size is None:
        changes["batch_size"] = default_batch_size(kind, rows)
    if config.bagging is None:
        changes["bagging"] = default_bagging(config, kind, pooled_rows=pooled_rows)
    if config.embedding_sigma is None and kind == "tabular":
        changes["embedding_sigma"] = default_embedding_sigma(rows)
    return dataclasses.replace(config, **changes) if changes else config


def validate_config(config: TrainConfig) -> None:
    """Check every setting; raise ``UserInputError`` naming the first bad one and the fix."""
    if not config.data:
        raise _invalid("data", "give a file path or a built-in dataset name", config.data)
    if config.task is not None:
        _check_choice("task", config.task, TASKS)
    _check_choice("activation", config.activation, ACTIVATIONS)
    _check_choice("optimizer", config.optimizer, OPTIMIZERS)
    _check_choice("categorical_encoding", config.categorical_encoding, CATEGORICAL_ENCODINGS)
    if config.loss is not None:
        _check_choice("loss", config.loss, REGRESSION_LOSSES + CLASSIFICATION_LOSSES)
    if not config.hidden or any(int(units) <= 0 for units in config.hidden):
        raise _invalid("hidden", "give positive layer sizes such as 64,32", config.hidden)
    if not 0 <= config.dropout < 1:
        raise _invalid("dropout", "must be in [0, 1)", config.dropout)
    if config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0):
        raise _invalid("lr", "must be a positive number such as 0.001", config.lr)
    _validate_tabular_net(config)
    if config.max_memory_mb is not None and not float(config.max_memory_mb) > 0:
        raise _invalid("max_memory_mb", "must be a positive number of MB", config.max_memory_mb)
    for name in ("epochs", "batch_size", "patience", "workers", "ensemble_size", "bagging"):
        if getattr(config, name) is not None and int(getattr(config, name)) <= 0:
            raise _invalid(name, "must be a positive integer", getattr(config, name))
    if config.bagging is not None and config.bagging > 20:
        raise _invalid("bagging", "must be 1 (no bagging) to 20", config.bagging)
    _validate_distributed(config)
    _validate_images(config)
    _validate_registration(config)
    _check_fraction("val_fraction", config.val_fraction, allow_zero=False)
    _check_fraction("test_fraction", config.test_fraction, allow_zero=True)
    if config.val_fraction + config.test_fraction >= 0.95:
        raise _invalid(
            "val_fraction",
            "validation and test fractions leave less than 5% of rows for training; "
            "lower --val-fraction or --test-fraction",
            config.val_fraction + config.test_fraction,
        )


def _validate_tabular_net(config: TrainConfig) -> None:
    """The settings ``tabular_net`` and the optimizer's schedule read."""
    _check_choice("numeric_embedding", config.numeric_embedding, NUMERIC_EMBEDDINGS)
    _check_choice("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    distributed_rate = config.warmup_epochs or (config.scale_lr and config.workers > 1)
    if config.lr_schedule == "cosine" and (distributed_rate or config.fine_tune_layers):
        raise _invalid(
            "lr_schedule",
            "a cosine schedule owns the learning rate, which warmup, --scale-lr on several "
            "workers and fine-tuning change; use --lr-schedule plateau with those",
            config.lr_schedule,
        )
    decay = config.weight_decay
    if decay is not None and not (
        isinstance(decay, int | float) and math.isfinite(decay) and decay >= 0
    ):
        raise _invalid("weight_decay", "must be 0 or a positive number such as 0.01", decay)
    sigma = config.embedding_sigma
    if sigma is not None and not (
        isinstance(sigma, int | float) and not isinstance(sigma, bool) and math.isfinite(sigma)
        and sigma > 0
    ):  # fmt: skip
        raise _invalid("embedding_sigma", "must be a positive number such as 0.1 or 1", sigma)


def check_registered_name(name: Any, *, option: str = "register") -> str:
    """``name`` if it is a valid registered model name, else ``UserInputError``."""
    if not isinstance(name, str) or not REGISTERED_NAME_PATTERN.match(name):
        raise _invalid(
            option,
            "a registered model name is letters, digits, '_', '-' and '.' (no '/', ':', '@' or "
            "spaces), starting with a letter, digit or '_', such as houses or houses_v2",
            name,
        )
    return name


def check_alias(alias: Any, *, option: str = "alias") -> str:
    """``alias`` if it is a valid, unreserved registered model alias, else ``UserInputError``."""
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias):
        raise _invalid(option, "an alias is letters, digits, '_' and '-', such as champion", alias)
    if RESERVED_ALIAS_PATTERN.match(alias):
        raise _invalid(
            option,
            "'latest' and v<number> are reserved (they name versions); choose another alias "
            "such as champion",
            alias,
        )
    return alias


def _validate_registration(config: TrainConfig) -> None:
    if config.register is not None:
        check_registered_name(config.register)
    for alias in config.aliases:
        check_alias(alias, option="aliases")
    if config.aliases and config.register is None:
        raise _invalid(
            "aliases",
            "aliases name versions of a registered model; add --register NAME",
            ",".join(config.aliases),
        )
    if config.tensorboard is not None and not str(config.tensorboard).strip():
        raise _invalid("tensorboard", "give a folder for the event files", config.tensorboard)


def _validate_images(config: TrainConfig) -> None:
    _check_choice("on_bad_image", config.on_bad_image, ON_BAD_IMAGE)
    if config.class_weight is not None:
        _check_choice("class_weight", config.class_weight, CLASS_WEIGHTS)
    layers = config.fine_tune_layers
    if layers is not None and layers != "all" and not (isinstance(layers, int) and layers > 0):
        raise _invalid("fine_tune_layers", "give a positive number of layers or 'all'", layers)
    if layers is not None and config.base is None:
        raise _invalid("fine_tune_layers", "fine-tuning needs a pretrained --base", layers)
    if config.fine_tune_lr is not None and not (
        math.isfinite(config.fine_tune_lr) and config.fine_tune_lr > 0
    ):
        raise _invalid(
            "fine_tune_lr", "must be a positive number such as 1e-5", config.fine_tune_lr
        )
    if int(config.fine_tune_epochs) <= 0:
        raise _invalid("fine_tune_epochs", "must be a positive integer", config.fine_tune_epochs)
    size = config.image_size
    if size is not None and (len(size) != 2 or any(int(side) <= 0 for side in size)):
        raise _invalid("image_size", "give a positive size such as 224 or 224,160", size)
    if not config.filters or any(int(count) <= 0 for count in config.filters):
        raise _invalid("filters", "give positive filter counts such as 32,64,128", config.filters)


def _validate_distributed(config: TrainConfig) -> None:
    if config.launcher is not None:
        _check_choice("launcher", config.launcher, DISTRIBUTED_LAUNCHERS)
    if config.collectives is not None:
        _check_choice("collectives", config.collectives, COLLECTIVES)
    if config.keras_backend is not None:
        _check_choice("keras_backend", config.keras_backend, KERAS_BACKENDS)
    for name in ("max_restarts", "warmup_epochs"):
        if int(getattr(config, name)) < 0:
            raise _invalid(name, "must be 0 or a positive integer", getattr(config, name))
    for name in ("startup_timeout", "watchdog"):
        value = getattr(config, name)
        if value is not None and float(value) < 0:
            raise _invalid(name, "must be 0 (off) or a positive number of seconds", value)
    if config.workers > 1 or config.launcher is not None or config.collectives is not None:
        resolve_collectives(config.launcher or "local", config.collectives, config.keras_backend)


def resolve_collectives(
    launcher: str, collectives: str | None, keras_backend: str | None = None
) -> str:
    """The collectives a launch uses (``None``: follow the Keras backend and the launcher).

    Raises:
        UserInputError: For a launcher, collectives and Keras backend that cannot work together.
    """
    from deepspark._backend import backend_name

    _check_choice("launcher", launcher, DISTRIBUTED_LAUNCHERS)
    keras_backend = keras_backend or backend_name()
    if launcher == "horovod" and keras_backend != "torch":
        raise _invalid(
            "launcher",
            "Horovod trains Keras on the torch backend only; add --keras-backend torch "
            "(or set KERAS_BACKEND=torch), or use --launcher local or spark with JAX",
            launcher,
        )
    if collectives is None:
        if keras_backend == "jax":
            return "jax"
        return "horovod" if launcher == "horovod" else "torch"
    _check_choice("collectives", collectives, COLLECTIVES)
    if (collectives == "jax") != (keras_backend == "jax"):
        fix = "jax" if keras_backend == "jax" else "torch or horovod"
        raise _invalid(
            "collectives",
            f"Keras runs on {keras_backend}, which communicates through {fix}; change "
            "--collectives or --keras-backend",
            collectives,
        )
    if (launcher, collectives) in (("local", "horovod"), ("horovod", "torch")):
        raise _invalid(
            "collectives",
            "horovod collectives need --launcher horovod (horovodrun) or --launcher spark "
            "(horovod.spark.run), and --launcher horovod needs horovod collectives",
            collectives,
        )
    return collectives


def _renamed_settings(settings: Mapping[str, Any], *, warn: bool) -> dict[str, Any]:
    """Map deprecated setting names to their new ones (``backend`` -> ``collectives``)."""
    settings = dict(settings)
    if "backend" in settings:
        value = settings.pop("backend")
        if warn and value is not None:
            import warnings

            warnings.warn(
                "The 'backend' setting (--backend) is deprecated: it is now 'collectives' "
                "(--collectives), so that it is not confused with the Keras backend "
                "(--keras-backend).",
                FutureWarning,
                stacklevel=4,
            )
        settings.setdefault("collectives", value)
    return settings


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """Turn TOML / CLI strings into the field's type (e.g. ``"64,32"`` -> ``(64, 32)``)."""
    if field.name in ("hidden", "filters"):
        return _integers(field.name, value)
    if field.name == "image_size":
        sides = _integers(field.name, value)
        return (sides[0], sides[0]) if len(sides) == 1 else sides
    if field.name == "fine_tune_layers":
        return _layers(value)
    if field.name == "base_options":
        return parse_options(value)
    if field.name == "weights" and isinstance(value, str) and value.lower() == "none":
        return None
    if field.name == "aliases":
        return parse_aliases(value)
    if field.name == "bagging":
        return _bagging(value)
    if field.name == "exclude":
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return tuple(value)
    return value


def _bagging(value: Any) -> int | None:
    """``"auto"`` -> ``None`` (the default: ``default_bagging`` resolves it), ``"3"`` -> 3."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError as error:
        raise _invalid(
            "bagging", "give a number of members from 1 (one network) to 20, or auto", value
        ) from error


def parse_aliases(value: Any) -> tuple[str, ...]:
    """Aliases from ``"a,b"``, ``["a", "b"]`` or ``["a,b", "c"]`` (a repeated CLI option)."""
    items = [value] if isinstance(value, str) else list(value)
    return tuple(part.strip() for item in items for part in str(item).split(",") if part.strip())


def _layers(value: Any) -> int | str:
    text = str(value).strip().lower()
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError as error:
        raise _invalid(
            "fine_tune_layers", "give a positive number of layers or 'all'", value
        ) from error


def parse_options(value: Any) -> dict[str, Any]:
    """Constructor options from ``KEY=VALUE`` strings (``alpha=0.35``; numbers, ``true`` /
    ``false`` and ``none`` are converted) or a mapping."""
    if isinstance(value, Mapping):
        return dict(value)
    items = [value] if isinstance(value, str) else list(value)
    options = {}
    for item in items:
        key, equals, text = str(item).partition("=")
        if not equals or not key.strip():
            raise _invalid("base_option", "give KEY=VALUE such as alpha=0.35", item)
        options[key.strip()] = _option_value(text.strip())
    return options


def _option_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _integers(name: str, value: Any) -> tuple[int, ...]:
    """``"64,32"``, ``"224x160"``, ``224`` or ``[64, 32]`` -> a tuple of integers."""
    if isinstance(value, int | float):
        value = [value]
    if isinstance(value, str):
        text = value.lower().replace("x", ",") if name == "image_size" else value
        value = text.split(",")
    try:
        return tuple(int(str(part).strip()) for part in value if str(part).strip())
    except ValueError as error:
        raise _invalid(name, "give comma-separated integers such as 64,32", value) from error


def make_config(
    settings: Mapping[str, Any], *, config_file: str | Path | None = None
) -> TrainConfig:
    """Build a ``TrainConfig`` from a TOML file overlaid with explicit settings.

    Args:
        settings: Settings given directly (CLI options, keyword arguments); ``None`` values are
            ignored so that file values and defaults apply.
        config_file: Optional TOML file whose keys are ``TrainConfig`` field names (``-`` or ``_``).

    Returns:
        The validated configuration.

    Raises:
        UserInputError: For an unreadable file, an unknown key or an invalid value.
    """
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(_read_toml(config_file, set(fields)))
    merged.update({key: value for key, value in settings.items() if value is not None})
    merged = _renamed_settings(merged, warn=True)
    unknown = sorted(set(merged) - set(fields))
    if unknown:
        raise UserInputError(
            f"Unknown setting {', '.join(unknown)}; valid settings are {', '.join(fields)}. "
            f"Received: {unknown[0]}={merged[unknown[0]]!r}"
        )
    values = {name: _coerce(fields[name], value) for name, value in merged.items()}
    try:
        return TrainConfig(**values)
    except TypeError as error:
        raise UserInputError(f"Invalid settings: {error}") from error


def _read_toml(path: str | Path, known: set[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError as error:
        raise UserInputError(f"Config file not found; check the path. Received: {path}") from error
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise UserInputError(
            f"Config file is not valid TOML ({error}). Received: {path}"
        ) from error
    # Accept a [train] table or top-level keys.
    section = document.get("train", document)
    return {str(key).replace("-", "_"): value for key, value in section.items()}
