"""Transfer-learning throughput: training a frozen-base model, and featurizing on Spark.

One run, one process (Keras on ``KERAS_BACKEND``, default ``jax``), one machine; each ratio is
measured within the run. The network is MobileNetV2 with width ``alpha=0.35`` at 160x160 from the
local ImageNet weights file (nothing is downloaded), on the ants-vs-bees photos
(``../shared/data/images/hymenoptera``: its own ``train/`` (245) and ``val/`` (153) folders).

0. **Frozen-base features computed once** (``cache``, the default part, about 2 minutes):
   the same head-only ``deepspark.train`` run (no augmentation, a fixed number of epochs) twice
   in one process, first with ``DEEPSPARK_FEATURE_CACHE=0`` (the base's forward pass every
   epoch: the behaviour before issue 20), then with the cache (features computed once, the
   head trained on them): ``head_epoch_speedup`` (median epoch after the first, before /
   after), ``wall_speedup`` (whole ``train`` call, feature computation, evaluation and model
   logging included), ``cached_head_rows_per_s`` and both runs' validation and test accuracy
   (``same_accuracy_within_0_02``; hymenoptera has no ``test/``, so half of ``val/`` is the
   test split; ``--quick``: the first 30 photos per class of each folder). ``fit.fit_model``
   routes every ``--base`` run through ``training.transfer.fit_transfer``, where the cache is.
1. **Training** (``train``): ``deepspark.train(<hymenoptera>, base="mobilenet_v2", ...)``, the
   head phase only (base frozen, no fine-tuning), no augmentation, ``patience`` above the epoch
   count, every epoch timed by Keras callbacks put in front of deepspark's own (``fit.run_fit``'s
   ``first_callbacks``, patched for this call; nothing in deepspark changes). Against a
   hand-written loop of the same model (``build_transfer`` on the same prepared data: same frozen
   base, pooling, dropout, head), on the same backend, over the same uint8 arrays in memory: on JAX
   a ``jax.jit``-compiled step of ``model.stateless_call`` + the same Keras optimizer's
   ``stateless_apply`` (the Keras guide "writing a training loop from scratch in JAX"); on torch
   ``loss.backward()`` + ``optimizer.apply`` of the same Keras optimizer. Same loss, batch size and
   learning rate as deepspark's fit. Images/s = training rows / the fastest epoch after the first
   (the first compiles); the loop's first epoch is left out the same way.

   With the base frozen, a training step costs about one forward pass of the base, and so does
   a validation image: deepspark validates its 153 images every epoch (early stopping needs it),
   which is about 40% more forward work than the 245 training images alone. So there are three
   figures: ``ratio_vs_hand_loop`` (deepspark's whole epoch, validation, metrics, checkpoint and
   MLflow logging included, against the loop's training-only epoch: strict),
   ``ratio_vs_hand_loop_with_validation`` (the loop charged one jitted validation pass over the
   same 153 images in deepspark's validation batch size: the same work; the goal) and
   ``train_only_ratio`` (deepspark's epoch up to the start of its validation, from Keras'
   ``on_test_begin``, against the loop's training-only epoch; JAX dispatches asynchronously, so
   the boundary is approximate).
2. **Featurizing** (``featurize``): ``deepspark.spark.ImageFeaturizer`` (the network built
   once, shipped, loaded once per Python worker) on the photos read with
   ``deepspark.spark.read_image_files`` (``binaryFile``, coalesced to ~1,000 files per partition
   and at least one per core), ``local[--cores]``, written to Spark's ``noop`` sink after warming
   every Python worker (one small task per core); best of two jobs (``coalesced_``: the same on
   exactly one partition per core; ``raw_binary_file_``: on ``binaryFile``'s own partitions,
   ~32 photos each, to show the per-task cost that coalescing removes). And
   ``deepspark.featurize(..., spark=True, output=<parquet>)`` end to end, best of two (session
   already running). Against the same network in one process pinned to one CPU
   (``feature_extractor`` + ``feature_rows``: decode, resize, forward, as the Spark workers do),
   warmed, best of two passes.
   ``fraction_of_limit`` = Spark images/s / (one-core images/s x cores). On a machine shared
   with other work the wall-clock figures depend on how much of the cores each contender got,
   so CPU time is reported too: ``spark_cores_used`` (CPU seconds of the driver, the JVM and
   its Python workers, read from ``/proc``, per second of the fastest job),
   ``spark_images_per_cpu_s`` vs ``in_process_images_per_cpu_s`` and their ratio
   ``cpu_efficiency_vs_in_process`` (near 1: Spark wastes no CPU; the shortfall is cores it
   did not get). ``--single-thread-xla`` also times the jobs in a session whose Python workers
   run XLA on one thread (``XLA_FLAGS``: deepspark's ``set_threads`` does nothing on JAX).
   The one-core child also reports one cold ``deepspark.featurize`` call (network built and
   compiled in the call).

Goals (issue 11, this 2-core machine): ``train.ratio_vs_hand_loop_with_validation`` >= 0.9 and
``featurize.fraction_of_limit`` >= 0.7. Measured on this machine at a load average of 6-10 on
its 2 cores (the training got 30% of them): the full run 6.5 minutes, ``--quick`` (3 epochs,
half the photos for featurizing) 4; on idle cores about half that. A busy machine
(``load_average`` above the cores) gives slower, noisier figures; ``train.deepspark_cpu_share``
and ``featurize.spark_cores_used`` say how much of the cores the measured work got.

Usage: ``python benchmarks/bench_transfer.py --json`` (one JSON object on stdout; the
``cache`` part); ``--parts cache,train,featurize`` for all three.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
HYMENOPTERA = IMAGES / "hymenoptera"
WEIGHTS = IMAGES / "weights" / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"
NETWORK = {"base": "mobilenet_v2", "base_options": {"alpha": 0.35}, "image_size": 160}
GOALS = {
    "cache_same_accuracy": 1.0,
    "train_ratio_vs_hand_loop_with_validation": 0.9,
    "featurize_fraction_of_limit": 0.7,
}
# Per mode: training epochs per measure (the first compiles), photos per class to featurize.
SIZES = {
    "full": {"epochs": 4, "featurize_per_class": None, "cache_epochs": 4, "cache_per_class": None},
    "quick": {"epochs": 3, "featurize_per_class": 50, "cache_epochs": 3, "cache_per_class": 30},
}
BATCH_SIZE = 32
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def cores() -> int:
    return len(os.sched_getaffinity(0))


def image_files(folder: Path) -> list[Path]:
    from deepspark.data.image_sources import IMAGE_SUFFIXES

    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


def subset_folder(source: Path, target: Path, per_class: int | None) -> Path:
    """The first ``per_class`` photos of each class of each split folder of ``source``, copied
    (class subfolders kept); ``None``: ``source`` itself."""
    if per_class is None:
        return source
    for class_folder in sorted(path for path in source.glob("*/*") if path.is_dir()):
        destination = target / class_folder.relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for image in sorted(class_folder.iterdir())[:per_class]:
            shutil.copy2(image, destination / image.name)
    return target


# -- 0. the frozen base's features computed once (issue 20 item 6) ------------------------------


def cache_settings(epochs: int, tracking_uri: str, folder: Path) -> dict:
    """A head-only transfer run of ``epochs`` epochs (no early stop), no augmentation."""
    return {**train_settings(epochs, tracking_uri), "data": str(folder), "patience": epochs + 100}


def timed_run(settings: dict, *, cache: bool) -> dict:
    """One ``deepspark.train`` with the feature cache on or off (``DEEPSPARK_FEATURE_CACHE``)."""
    import deepspark

    os.environ["DEEPSPARK_FEATURE_CACHE"] = "1" if cache else "0"
    timer = phase_timer()
    arguments = {key: value for key, value in settings.items() if key != "data"}
    started = time.perf_counter()
    with timed_epochs(timer):
        result = deepspark.train(settings["data"], **arguments)
    seconds = time.perf_counter() - started
    later = timer.durations[1:] or timer.durations  # the first epoch compiles
    return {
        "wall_seconds": round(seconds, 2),
        "head_epoch_seconds": round(float(np.median(later)), 4),
        "first_epoch_seconds": round(timer.durations[0], 3),
        "train_rows": result.rows["train"],
        "rows": result.rows,
        "val_accuracy": result.metrics.get("val_accuracy"),
        "test_accuracy": result.metrics.get("test_accuracy"),
    }


def cache_part(epochs: int, tracking_uri: str, folder: Path) -> dict:
    """The same head-only run without, then with, the feature cache: per-epoch and total time,
    accuracy, and the cached head phase's rows/s."""
    settings = cache_settings(epochs, tracking_uri, folder)
    before = timed_run(settings, cache=False)
    after = timed_run(settings, cache=True)
    same = all(
        before[key] is not None and abs(before[key] - after[key]) <= 0.02
        for key in ("val_accuracy", "test_accuracy")
    )
    return {
        "epochs": epochs,
        "before": before,
        "after": after,
        "head_epoch_speedup": round(before["head_epoch_seconds"] / after["head_epoch_seconds"], 1),
        "wall_speedup": round(before["wall_seconds"] / after["wall_seconds"], 2),
        "cached_head_rows_per_s": round(after["train_rows"] / after["head_epoch_seconds"], 1),
        "same_accuracy_within_0_02": same,
    }


# -- 1. training ----------------------------------------------------------------------------------


def phase_timer():
    """A Keras callback recording each epoch's wall time (epoch start to the next one's, so
    every other callback's end-of-epoch work counts) and its training part (epoch start to the
    start of validation)."""
    import keras

    class PhaseTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.durations: list[float] = []
            self.train_durations: list[float] = []
            self.started: float | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._mark()

        def on_test_begin(self, logs=None):
            if self.started is not None:
                self.train_durations.append(time.perf_counter() - self.started)

        def on_train_end(self, logs=None):
            self._mark()
            self.started = None

        def _mark(self):
            now = time.perf_counter()
            if self.started is not None:
                self.durations.append(now - self.started)
            self.started = now

    return PhaseTimer()


@contextlib.contextmanager
def timed_epochs(timer):
    """Put ``timer`` in front of deepspark's callbacks for fits inside this block (a wrapper
    around ``fit.run_fit``; nothing in deepspark changes)."""
    from deepspark.training import fit as fit_module

    run_fit = fit_module.run_fit

    def timed_run_fit(*args, first_callbacks=(), **kwargs):
        return run_fit(*args, first_callbacks=(timer, *first_callbacks), **kwargs)

    fit_module.run_fit = timed_run_fit
    try:
        yield
    finally:
        fit_module.run_fit = run_fit


def train_settings(epochs: int, tracking_uri: str) -> dict:
    """The head phase of a transfer run, a fixed number of epochs (no early stop)."""
    return {
        "data": str(HYMENOPTERA),
        **NETWORK,
        "weights": str(WEIGHTS),
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "augment": False,
        "patience": epochs + 100,
        "tracking_uri": tracking_uri,
    }


def deepspark_training(settings: dict) -> dict:
    import deepspark

    timer = phase_timer()
    arguments = {key: value for key, value in settings.items() if key != "data"}
    with timed_epochs(timer):
        result = deepspark.train(settings["data"], **arguments)
    return {
        "durations": timer.durations,
        "train_durations": timer.train_durations,
        "train_rows": result.rows["train"],
        "seconds": result.seconds,
        "val_accuracy": result.metrics.get("val_accuracy"),
    }


def prepared_photos(settings: dict):
    """The same split and uint8 arrays ``deepspark.train`` trains on."""
    from deepspark.config import make_config
    from deepspark.training.prepare import prepare_data

    return prepare_data(make_config(settings))


def same_model(prepared):
    """The frozen-base model deepspark's ``transfer`` builder makes, and its optimizer and loss
    (the same calls ``fit.build_compiled_model`` makes)."""
    import keras

    from deepspark.models.transfer import build_transfer
    from deepspark.training.fit import loss_and_metrics
    from deepspark.training.optimizers import make_optimizer

    keras.utils.set_random_seed(prepared.config.seed)
    model = build_transfer(prepared.schema, prepared.config)
    optimizer = make_optimizer(prepared.config.optimizer, prepared.config.lr)
    loss, _ = loss_and_metrics(prepared)
    return model, optimizer, loss


def batches(rows: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(rows)
    for start in range(0, rows, batch_size):
        yield order[start : start + batch_size]


def jax_hand_loop(prepared, epochs: int) -> dict:
    """Seconds of each epoch of the hand-written JAX loop, and of one jitted pass over the
    validation split in deepspark's validation batch size (loss and predictions)."""
    import jax

    from deepspark.data.image_inputs import chunk_rows

    model, optimizer, loss_function = same_model(prepared)
    optimizer.build(model.trainable_variables)

    def loss_and_state(trainable, non_trainable, images, labels):
        predicted, non_trainable = model.stateless_call(
            trainable, non_trainable, images, training=True
        )
        return loss_function(labels, predicted), non_trainable

    gradient = jax.value_and_grad(loss_and_state, has_aux=True)

    @jax.jit
    def train_step(state, images, labels):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = gradient(trainable, non_trainable, images, labels)
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        return loss, (trainable, non_trainable, optimizer_variables)

    @jax.jit
    def validation_step(state, images, labels):
        predicted, _ = model.stateless_call(state[0], state[1], images, training=False)
        return loss_function(labels, predicted), predicted

    state = (
        [variable.value for variable in model.trainable_variables],
        [variable.value for variable in model.non_trainable_variables],
        [variable.value for variable in optimizer.variables],
    )
    images, labels = prepared.inputs["train"], prepared.targets["train"]
    rng = np.random.default_rng(prepared.config.seed)
    durations = []
    for _ in range(epochs):
        started = time.perf_counter()
        for index in batches(len(images), prepared.config.batch_size, rng):
            loss, state = train_step(state, images[index], labels[index])
        loss.block_until_ready()
        durations.append(time.perf_counter() - started)

    val_images, val_labels = prepared.inputs["val"], prepared.targets["val"]
    val_rows = max(prepared.config.batch_size, chunk_rows(prepared.schema.image))

    def validate():
        for start in range(0, len(val_images), val_rows):
            part = slice(start, start + val_rows)
            loss, _ = validation_step(state, val_images[part], val_labels[part])
            float(loss)  # to the host, as a metric would be

    validate()  # compile
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        validate()
        seconds.append(time.perf_counter() - started)
    return {"durations": durations, "validation_seconds": min(seconds)}


def torch_hand_loop(prepared, epochs: int) -> dict:
    """The plain torch loop over the same Keras model (a ``torch.nn.Module`` on this backend):
    forward / loss / ``backward`` / the same Keras optimizer's ``apply``."""
    import torch

    model, optimizer, loss_function = same_model(prepared)
    images = torch.from_numpy(prepared.inputs["train"])
    labels = torch.from_numpy(np.asarray(prepared.targets["train"]))
    rng = np.random.default_rng(prepared.config.seed)
    variables = model.trainable_variables
    durations = []
    for _ in range(epochs):
        started = time.perf_counter()
        for index in batches(len(images), prepared.config.batch_size, rng):
            batch = torch.from_numpy(index)
            model.zero_grad()
            loss = loss_function(labels[batch], model(images[batch], training=True))
            loss.backward()
            optimizer.apply([variable.value.grad for variable in variables], variables)
        durations.append(time.perf_counter() - started)
    started = time.perf_counter()
    with torch.no_grad():
        predicted = model(torch.from_numpy(prepared.inputs["val"]), training=False)
        float(loss_function(torch.from_numpy(np.asarray(prepared.targets["val"])), predicted))
    return {"durations": durations, "validation_seconds": time.perf_counter() - started}


def train_part(epochs: int, tracking_uri: str) -> dict:
    from deepspark._backend import backend_name

    settings = train_settings(epochs, tracking_uri)
    started, cpu_started = time.perf_counter(), time.process_time()
    ours = deepspark_training(settings)
    cpu_share = (time.process_time() - cpu_started) / ((time.perf_counter() - started) * cores())
    prepared = prepared_photos(settings)
    hand_loop = jax_hand_loop if backend_name() == "jax" else torch_hand_loop
    hand = hand_loop(prepared, epochs)
    rows = len(prepared.inputs["train"])
    ours_rate = rows / min(ours["durations"][1:])
    ours_train_rate = rows / min(ours["train_durations"][1:])
    fastest = min(hand["durations"][1:])
    hand_rate = rows / fastest
    with_validation = rows / (fastest + hand["validation_seconds"])
    return {
        "keras_backend": backend_name(),
        "train_images": rows,
        "val_images": len(prepared.inputs["val"]),
        "image_size": NETWORK["image_size"],
        "base": NETWORK["base"],
        "base_options": NETWORK["base_options"],
        "batch_size": prepared.config.batch_size,
        "epochs_per_measure": epochs,
        "deepspark_images_per_s": round(ours_rate, 1),
        "deepspark_train_only_images_per_s": round(ours_train_rate, 1),
        "hand_loop_images_per_s": round(hand_rate, 1),
        "hand_loop_with_validation_images_per_s": round(with_validation, 1),
        "ratio_vs_hand_loop": round(ours_rate / hand_rate, 3),
        "ratio_vs_hand_loop_with_validation": round(ours_rate / with_validation, 3),
        "train_only_ratio": round(ours_train_rate / hand_rate, 3),
        "deepspark_epoch_seconds": [round(value, 2) for value in ours["durations"]],
        "deepspark_train_part_seconds": [round(value, 2) for value in ours["train_durations"]],
        "hand_loop_epoch_seconds": [round(value, 2) for value in hand["durations"]],
        "hand_loop_validation_seconds": round(hand["validation_seconds"], 2),
        "deepspark_train_seconds": ours["seconds"],
        "deepspark_val_accuracy": round(ours["val_accuracy"], 4),
        # CPU time / (seconds x cores) of deepspark's training: near 1 on an idle machine.
        "deepspark_cpu_share": round(cpu_share, 3),
    }


# -- 2. featurizing -------------------------------------------------------------------------------


def featurize_part(folder: Path, scratch: Path, args) -> dict:
    spark_cores = args.cores
    one_core = in_process_one_core(folder, args.timeout)
    spark = spark_figures(folder, scratch, spark_cores, single_thread=args.single_thread_xla)
    rows, limit = spark.pop("rows"), one_core["images_per_s"] * spark_cores
    names = (
        "noop",
        "coalesced_noop",
        "featurize_call",
        "single_thread_noop",
        "raw_binary_file_noop",
    )
    rates = {
        name: rows / min(spark[f"{name}_seconds"]) for name in names if spark.get(name + "_seconds")
    }
    per_cpu = rows / spark["noop_cpu_seconds"]
    figures = {
        "images": rows,
        "spark_cores": spark_cores,
        "spark_images_per_s": round(rates["noop"], 1),
        "coalesced_spark_images_per_s": round(rates["coalesced_noop"], 1),
        "featurize_call_spark_images_per_s": round(rates["featurize_call"], 1),
        "in_process_one_core_images_per_s": round(one_core["images_per_s"], 1),
        "in_process_cold_featurize_images_per_s": round(one_core["cold_images_per_s"], 1),
        "in_process_cpu": one_core["cpu"],
        "fraction_of_limit": round(rates["noop"] / limit, 3),
        "coalesced_fraction_of_limit": round(rates["coalesced_noop"] / limit, 3),
        "featurize_call_fraction_of_limit": round(rates["featurize_call"] / limit, 3),
        "raw_binary_file_fraction_of_limit": round(rates["raw_binary_file_noop"] / limit, 3),
        # CPU seconds, not wall: what the cores that Spark got did, whatever else ran.
        "spark_cores_used": round(spark["noop_cpu_seconds"] / min(spark["noop_seconds"]), 2),
        "spark_images_per_cpu_s": round(per_cpu, 1),
        "in_process_images_per_cpu_s": round(one_core["images_per_cpu_s"], 1),
        "cpu_efficiency_vs_in_process": round(per_cpu / one_core["images_per_cpu_s"], 3),
        **{
            key: [round(value, 2) for value in values]
            if isinstance(values, list)
            else round(values, 2)
            for key, values in spark.items()
        },
    }
    if "single_thread_noop" in rates:
        figures["single_thread_xla_spark_images_per_s"] = round(rates["single_thread_noop"], 1)
        single_fraction = rates["single_thread_noop"] / limit
        figures["single_thread_xla_fraction_of_limit"] = round(single_fraction, 3)
        single_per_cpu = rows / spark["single_thread_noop_cpu_seconds"]
        figures["single_thread_xla_images_per_cpu_s"] = round(single_per_cpu, 1)
    return figures


def featurizer(column: str = "content"):
    from deepspark.spark import ImageFeaturizer

    return ImageFeaturizer(
        inputCol=column,
        outputCol="features",
        modelName=NETWORK["base"],
        weights=str(WEIGHTS),
        baseOptions=NETWORK["base_options"],
        imageSize=NETWORK["image_size"],
    )


def spark_figures(folder: Path, scratch: Path, spark_cores: int, *, single_thread: bool) -> dict:
    """Seconds of Spark featurizing jobs, in a session as deepspark makes it and, with
    ``single_thread``, in one whose Python workers run XLA single-threaded (``XLA_FLAGS``)."""
    import deepspark
    from deepspark.spark import get_session

    clock = time.perf_counter()
    spark = get_session(f"local[{spark_cores}]", config={"spark.driver.memory": "4g"})
    figures = {"session_seconds": round(time.perf_counter() - clock, 1)}
    stage = featurizer()
    clock = time.perf_counter()
    stage.modelDirectory()  # built on the driver once; the jobs ship it
    figures["network_build_seconds"] = round(time.perf_counter() - clock, 1)
    figures.update(timed_jobs(spark, stage, folder, spark_cores))
    call_seconds = []
    for attempt in range(2):
        clock = time.perf_counter()
        deepspark.featurize(
            str(folder),
            model=NETWORK["base"],
            weights=str(WEIGHTS),
            base_options=NETWORK["base_options"],
            image_size=NETWORK["image_size"],
            output=str(scratch / f"features_{attempt}"),
            spark=True,
        )
        call_seconds.append(time.perf_counter() - clock)
    figures["featurize_call_seconds"] = call_seconds
    spark.stop()
    if not single_thread:
        return figures
    # The same jobs with one XLA thread per Python worker: deepspark's set_threads does nothing
    # on JAX, so each of the spark_cores workers otherwise runs a pool sized to every core.
    single = {"spark.executorEnv.XLA_FLAGS": SINGLE_THREAD_XLA, "spark.driver.memory": "4g"}
    spark = get_session(f"local[{spark_cores}]", config=single)
    jobs = timed_jobs(spark, stage, folder, spark_cores, coalesced=False)
    figures["single_thread_noop_seconds"] = jobs["noop_seconds"]
    figures["single_thread_noop_cpu_seconds"] = jobs["noop_cpu_seconds"]
    figures["single_thread_warm_seconds"] = jobs["warm_seconds"]
    spark.stop()
    return figures


def timed_jobs(spark, stage, folder: Path, spark_cores: int, *, coalesced: bool = True) -> dict:
    """Warm every Python worker (one small task per core: each loads the network and
    compiles), then time two jobs into the ``noop`` sink on ``binaryFile``'s partitions, and
    with ``coalesced`` two more on one partition per core."""
    from deepspark.spark import read_image_files

    frame = read_image_files(spark, str(folder))  # as deepspark reads images (coalesced)
    raw = spark.read.format("binaryFile").load(f"{folder}/*/*/*")  # binaryFile's partitions
    figures = {"rows": frame.count(), "input_partitions": frame.rdd.getNumPartitions()}
    figures["raw_binary_file_partitions"] = raw.rdd.getNumPartitions()
    warm = frame.limit(4 * spark_cores).repartition(spark_cores)
    figures["warm_seconds"] = round(timed_noop(stage.transform(warm)), 1)
    jobs = [timed_noop_with_cpu(stage.transform(frame)) for _ in range(2)]
    figures["noop_seconds"] = [seconds for seconds, _ in jobs]
    figures["noop_cpu_seconds"] = min(jobs)[1]  # of the fastest job
    if coalesced:
        merged = stage.transform(frame.coalesce(spark_cores))
        figures["coalesced_noop_seconds"] = [timed_noop(merged) for _ in range(2)]
        figures["raw_binary_file_noop_seconds"] = [timed_noop(stage.transform(raw))]
    return figures


def timed_noop(scored) -> float:
    """Seconds to compute every row into Spark's ``noop`` sink."""
    return timed_noop_with_cpu(scored)[0]


def timed_noop_with_cpu(scored) -> tuple[float, float]:
    """Seconds to compute every row into Spark's ``noop`` sink, and the CPU seconds this
    process and its descendants (the JVM, its Python workers) spent meanwhile."""
    cpu_before = tree_cpu_seconds()
    started = time.perf_counter()
    scored.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started, tree_cpu_seconds() - cpu_before


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and every live descendant (from ``/proc``;
    a descendant that exits meanwhile is not counted: Spark's Python workers are reused)."""
    parents, times = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def in_process_one_core(folder: Path, timeout: float) -> dict:
    """The featurizer in a process pinned to one CPU: the per-core limit (apart, so that
    Spark's processes do not inherit the pinning)."""
    cpu = min(os.sched_getaffinity(0))
    done = subprocess.run(
        [sys.executable, __file__, "--in-process-worker", str(folder)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    if done.returncode != 0:
        raise RuntimeError(f"in-process measurement failed: {done.stderr.strip()[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "cpu": cpu}


def in_process_worker(folder: str) -> None:
    import deepspark
    from deepspark.data.schema import ImageSpec
    from deepspark.models.image_features import feature_extractor, feature_rows

    paths = [str(path) for path in image_files(Path(folder))]
    options = {
        "weights": str(WEIGHTS),
        "base_options": NETWORK["base_options"],
        "image_size": NETWORK["image_size"],
    }
    started = time.perf_counter()
    deepspark.featurize(folder, model=NETWORK["base"], **options)
    cold_rate = len(paths) / (time.perf_counter() - started)
    network = feature_extractor(NETWORK["base"], **options)
    side = NETWORK["image_size"]
    spec = ImageSpec(side, side, 3)
    feature_rows(network, paths, spec)  # compile every chunk size
    passes = []
    for _ in range(2):
        started, cpu_started = time.perf_counter(), time.process_time()
        feature_rows(network, paths, spec)
        passes.append((time.perf_counter() - started, time.process_time() - cpu_started))
    seconds, cpu_seconds = min(passes)
    result = {
        "images_per_s": len(paths) / seconds,
        "images_per_cpu_s": len(paths) / cpu_seconds,
        "cold_images_per_s": cold_rate,
    }
    print(json.dumps(result))


# -- run ------------------------------------------------------------------------------------------


def goal_checks(results: dict) -> dict:
    cache = results.get("cache", {})
    checks = {
        "cache_same_accuracy": None if not cache else float(cache["same_accuracy_within_0_02"]),
        "train_ratio_vs_hand_loop_with_validation": results.get("train", {}).get(
            "ratio_vs_hand_loop_with_validation"
        ),
        "featurize_fraction_of_limit": results.get("featurize", {}).get("fraction_of_limit"),
    }
    ran = {"cache": "cache", "train": "train", "featurize": "featurize"}
    return {
        name: {
            "goal": GOALS[name],
            "value": value,
            "pass": value is not None and value >= GOALS[name],
        }
        for name, value in checks.items()
        if ran[name.split("_")[0]] in results  # only the parts that ran
    }


def run(args) -> dict:
    sizes = SIZES["quick" if args.quick else "full"]
    parts = set(args.parts.split(","))
    results: dict = {}
    stage_seconds: dict = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(scratch / "checkpoints")
        tracking_uri = f"sqlite:///{scratch}/mlflow.db"
        if "cache" in parts:
            clock = time.perf_counter()
            photos = subset_folder(HYMENOPTERA, scratch / "cache", sizes["cache_per_class"])
            epochs = args.epochs or sizes["cache_epochs"]
            results["cache"] = cache_part(epochs, tracking_uri, photos)
            stage_seconds["cache"] = round(time.perf_counter() - clock, 1)
        if "train" in parts:
            clock = time.perf_counter()
            results["train"] = train_part(args.epochs or sizes["epochs"], tracking_uri)
            stage_seconds["train"] = round(time.perf_counter() - clock, 1)
        if "featurize" in parts:
            clock = time.perf_counter()
            folder = subset_folder(HYMENOPTERA, scratch / "photos", sizes["featurize_per_class"])
            results["featurize"] = featurize_part(folder, scratch, args)
            stage_seconds["featurize"] = round(time.perf_counter() - clock, 1)
    results["stage_seconds"] = stage_seconds
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--parts",
        default="cache",
        help="comma-separated: cache (default, about 2 min), train, featurize (6 min more)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer epochs, fewer photos")
    parser.add_argument("--epochs", type=int, help="training epochs per measure")
    parser.add_argument("--cores", type=int, default=2, help="Spark master local[N]")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds, pinned child")
    parser.add_argument(
        "--single-thread-xla",
        action="store_true",
        help="also time the Spark jobs with one XLA thread per Python worker (about +1 min)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--in-process-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_worker:
        in_process_worker(args.in_process_worker)
        return
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    results = run(args)
    checks = goal_checks(results)
    from bench_fit_overhead import closing_figures

    from deepspark.runtime import framework_versions

    figures = {
        "benchmark": "transfer",
        "mode": "quick" if args.quick else "full",
        **results,
        "versions": framework_versions(),
        **closing_figures(checks, started, load_at_start),
    }
    print(json.dumps(figures) if args.json else json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
