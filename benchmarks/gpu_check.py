"""GPU session check: deepspark's training throughput per Keras backend on one NVIDIA GPU.

Meant for a machine with one H100 / H200, Python 3.12, CUDA builds of torch and jax, and Keras
installed; MLflow and PySpark are not needed (the MLP is built by
``deepspark.training.fit.build_compiled_model``, whose modules import neither; ``fit_model``
itself logs to MLflow, so it is not used here). Each Keras backend runs in its own child process
(``KERAS_BACKEND`` set in its environment), and each child also runs the raw torch baselines, so
every ratio is measured within one process. Figures, per backend:

- ``mlp``: deepspark's default tabular MLP (256-128-64) fitted with Keras at batch 64 and 1024,
  samples/s of the whole fit and of its fastest epoch after the first (no compilation), vs a
  hand-written torch loop of the same network on the GPU (data already on the GPU; fastest
  epoch). Data: California housing from ``../shared/data`` when present, else synthetic rows of
  the same shape (``data`` says which).
- ``mobilenet``: ``keras.applications.MobileNetV2(weights=None)`` at 224 px, batch 64, synthetic
  images fed from host memory by ``fit``, training images/s (fastest epoch after a warm-up epoch)
  vs torchvision's ``mobilenet_v2`` in a raw torch loop (images already on the GPU).
- ``cnn``: deepspark's from-scratch CNN (filters 32-64-128, 128 px, batch 64) trained by ``fit``
  on uint8 images, images/s (fastest epoch after the first); and scoring encoded JPEG bytes
  through ``DeepsparkModel.predict`` (host decoding in threads + device forward), images/s.
- ``transfer``: deepspark's transfer-learning model (``build_transfer``) for MobileNetV2 and
  ResNet50 at 224 px, batch 64, weights ``none``: ``fit`` images/s with the base frozen and
  with every layer but BatchNorm unfrozen (fine-tuning).
- ``distributed``: world size 1 on the GPU: ``DistributedOptimizer`` + ``distributed_callbacks()``
  vs a plain ``fit`` of the MLP, one epoch each in turn (ABBA), best epoch each;
  ``overhead = 1 - distributed / plain``. On torch the process group is torch.distributed with
  nccl; where a backend's path is missing it reads ``"unavailable: <reason>"``.

Every section is guarded (one failure keeps the other figures) and every child has a timeout
inside ``--budget`` seconds. ``--smoke`` runs tiny sizes on a CPU-only machine to test the script.
Prints one JSON object at the end. Usage (GPU machine, from the repository root)::

    PYTHONPATH=src python3 benchmarks/gpu_check.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[1] / "shared" / "data" / "california_housing.csv"
TARGET = "median_house_value"
HIDDEN = (256, 128, 64)
BACKENDS = ("jax", "torch")
FULL = {
    "mlp_batches": {64: 3, 1024: 10},  # batch size -> epochs per fit
    "mlp_rows": None,  # all training rows
    "image_size": 224,
    "image_batch": 64,
    "image_steps": 10,  # steps per timed epoch
    "image_epochs": 3,  # the first warms up (compiles)
    "distributed_rounds": 3,
    "cnn_size": 128,
    "score_images": 2048,
    "transfer_networks": ("mobilenet_v2", "resnet50"),
}
SMOKE = {
    "mlp_batches": {64: 2, 1024: 3},
    "mlp_rows": 4096,
    "image_size": 64,
    "image_batch": 8,
    "image_steps": 2,
    "image_epochs": 2,
    "distributed_rounds": 1,
    "cnn_size": 32,
    "score_images": 64,
    "transfer_networks": ("mobilenet_v2",),
}


# ----------------------------------------------------------------------------------- data


def synthetic_california(path: Path, rows: int = 20_640, seed: int = 0) -> None:
    """California-housing-shaped rows (same columns, missing values, one categorical)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    income = rng.gamma(4.0, 1.0, rows)
    households = rng.integers(50, 3000, rows).astype(float)
    frame = pd.DataFrame(
        {
            "longitude": rng.uniform(-124.3, -114.3, rows),
            "latitude": rng.uniform(32.5, 42.0, rows),
            "housing_median_age": rng.integers(1, 53, rows).astype(float),
            "total_rooms": households * rng.uniform(3, 7, rows),
            "total_bedrooms": households * rng.uniform(0.9, 1.3, rows),
            "population": households * rng.uniform(2, 4, rows),
            "households": households,
            "median_income": income,
            "ocean_proximity": rng.choice(
                ["<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN"], rows
            ),
        }
    )
    frame.loc[rng.random(rows) < 0.01, "total_bedrooms"] = np.nan
    value = 40_000 * income + 20_000 * (frame["ocean_proximity"] != "INLAND")
    frame[TARGET] = np.clip(value + rng.normal(0, 30_000, rows), 15_000, 500_001)
    frame.to_csv(path, index=False)


def prepared_mlp_data(data: str, batch_size: int, epochs: int, rows: int | None):
    from deepspark.config import TrainConfig
    from deepspark.training.prepare import prepare_data

    config = TrainConfig(
        data=data, target=TARGET, batch_size=batch_size, epochs=epochs, hidden=HIDDEN
    )
    prepared = prepare_data(config)
    if rows:
        import dataclasses

        train = {name: values[:rows] for name, values in prepared.inputs["train"].items()}
        prepared = dataclasses.replace(
            prepared,
            inputs={**prepared.inputs, "train": train},
            targets={**prepared.targets, "train": prepared.targets["train"][:rows]},
        )
    return prepared


# ---------------------------------------------------------------------------------- timing


def shared_helpers():
    """``bench_fit_overhead``'s epoch timer and torch twin of the MLP (one place for each)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import bench_fit_overhead

    return bench_fit_overhead


def epoch_timer():
    return shared_helpers().epoch_timer()


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def raw_torch_mlp(prepared, batch_size: int, epochs: int) -> float:
    """Samples/s of a hand-written torch loop over the same MLP, data on the device."""
    device = str(torch_device())
    helpers = shared_helpers()
    return helpers.time_raw_torch(
        prepared, HIDDEN, batch_size, epochs, device=device, warmup_epochs=1
    )


def keras_mlp(prepared, batch_size: int, epochs: int) -> tuple[float, float]:
    """(samples/s of the whole fit, of its fastest epoch after the first)."""
    return shared_helpers().time_keras_fit(prepared, batch_size, epochs)


# -------------------------------------------------------------------------------- sections


def section_env(sizes, data) -> dict:
    import keras
    import torch

    from deepspark._backend import backend_name

    info = {
        "keras_backend": backend_name(),
        "keras": keras.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.cuda.is_available(),
        "torch_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "python": sys.version.split()[0],
    }
    if backend_name() == "jax":
        import jax

        info["jax"] = jax.__version__
        info["jax_devices"] = [str(device) for device in jax.devices()]
    for optional in ("mlflow", "pyspark"):
        import importlib.util

        info[f"{optional}_installed"] = importlib.util.find_spec(optional) is not None
    return info


def section_mlp(sizes, data) -> dict:
    result = {"model": "build_compiled_model + keras fit", "hidden": list(HIDDEN)}
    for batch_size, epochs in sizes["mlp_batches"].items():
        prepared = prepared_mlp_data(data, batch_size, epochs, sizes["mlp_rows"])
        raw = raw_torch_mlp(prepared, batch_size, epochs)
        keras_mlp(prepared, batch_size, 2)  # warm-up: imports, allocator, cuDNN handles
        whole, steady = keras_mlp(prepared, batch_size, epochs)
        result[str(batch_size)] = {
            "rows": len(prepared.targets["train"]),
            "epochs": epochs,
            "samples_per_s_raw_torch": round(raw),
            "samples_per_s_deepspark_fit": round(whole),
            "samples_per_s_deepspark_fit_steady": round(steady),
            "ratio_vs_raw_torch": round(whole / raw, 3),
            "ratio_steady_vs_raw_torch": round(steady / raw, 3),
        }
    return result


def section_mobilenet(sizes, data) -> dict:
    size, batch, steps = sizes["image_size"], sizes["image_batch"], sizes["image_steps"]
    try:
        raw = raw_torch_mobilenet(size, batch, steps)
    except Exception as error:  # torchvision missing, say: keep the Keras figure
        raw = f"{type(error).__name__}: {error}"[:300]
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=1000)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    rng = np.random.default_rng(0)
    images = rng.random((batch * steps, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, 1000, batch * steps)
    timer = epoch_timer()
    model.fit(
        images,
        labels,
        batch_size=batch,
        epochs=sizes["image_epochs"],
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    keras_rate = batch * steps / min(timer.durations[1:])
    return {
        "image_size": size,
        "batch_size": batch,
        "steps_per_epoch": steps,
        "warmup_epoch_seconds": round(timer.durations[0], 2),
        "images_per_s_keras_fit": round(keras_rate, 1),
        "images_per_s_raw_torchvision": round(raw, 1) if isinstance(raw, float) else raw,
        "ratio_vs_raw_torch": round(keras_rate / raw, 3) if isinstance(raw, float) else None,
    }


def raw_torch_mobilenet(size: int, batch: int, steps: int) -> float:
    """Images/s of torchvision's mobilenet_v2 in a raw training loop, images on the device."""
    import torch
    import torchvision

    device = torch_device()
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(batch, 3, size, size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return batch * steps / (time.perf_counter() - started)


def section_distributed(sizes, data) -> dict:
    """World size 1: DistributedOptimizer + distributed callbacks vs a plain fit (ABBA)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }.items():
        os.environ.setdefault(name, value)
    from deepspark.training.fit import build_compiled_model

    try:
        from deepspark.distributed import DistributedOptimizer, distributed_callbacks, init

        group = init()
        prepared = prepared_mlp_data(data, 64, 1, sizes["mlp_rows"])
        distributed_model = build_compiled_model(prepared)
        DistributedOptimizer(distributed_model.optimizer)
        callbacks = distributed_callbacks()
        x, y = prepared.inputs["train"], prepared.targets["train"]
        # One distributed epoch before timing: an unsupported path fails here, cheaply.
        distributed_model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=callbacks)
    except Exception as error:  # a missing path is a figure, not a failure
        return {"status": f"unavailable: {type(error).__name__}: {error}"[:600]}
    plain_model = build_compiled_model(prepared)
    plain, distributed = [], []
    for round_index in range(sizes["distributed_rounds"] + 1):  # round 0 warms up both
        order = ("plain", "distributed") if round_index % 2 == 0 else ("distributed", "plain")
        for contender in order:
            model = plain_model if contender == "plain" else distributed_model
            started = time.perf_counter()
            model.fit(
                x,
                y,
                batch_size=64,
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=callbacks if contender == "distributed" else [],
            )
            rate = len(y) / (time.perf_counter() - started)
            (plain if contender == "plain" else distributed).append(rate)
    best_plain, best_distributed = max(plain[1:]), max(distributed[1:])
    return {
        "status": "ok",
        "collectives": getattr(group, "name", None),
        "process_group_backend": getattr(group, "process_group_backend", None),
        "world_size": getattr(group, "size", None),
        "samples_per_s_plain": round(best_plain),
        "samples_per_s_distributed": round(best_distributed),
        "overhead_world_size_1": round(1 - best_distributed / best_plain, 3),
    }


def section_cnn(sizes, data) -> dict:
    """deepspark's from-scratch CNN (``build_cnn``, uint8 pixels in) trained with ``fit``, and
    an image model scoring encoded JPEG bytes (host decode + device forward) with
    ``DeepsparkModel.predict``, the path pandas, pyfunc and Spark scoring share."""
    import io

    import keras
    from PIL import Image

    from deepspark.data.image_inputs import image_schema
    from deepspark.data.schema import ImageSpec
    from deepspark.models.cnn import build_cnn
    from deepspark.tracking.model import DeepsparkModel

    size, batch, steps = sizes["cnn_size"], sizes["image_batch"], sizes["image_steps"]
    keras.utils.set_random_seed(0)
    model = build_cnn((size, size), classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch * steps, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, batch * steps)
    timer = epoch_timer()
    model.fit(images, labels, batch_size=batch, epochs=sizes["image_epochs"], verbose=0,
              shuffle=False, callbacks=[timer])  # fmt: skip
    train_rate = batch * steps / min(timer.durations[1:])
    encoded = []
    for pixels in images[: sizes["score_images"]]:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    schema = image_schema(ImageSpec(size, size, 3), target="label", task="multiclass",
                          class_labels=list(range(10)))  # fmt: skip
    scorer = DeepsparkModel(model, schema, {})
    frame = __import__("pandas").DataFrame({"image": encoded})
    scorer.predict(frame.head(64))  # compile the chunk sizes
    started = time.perf_counter()
    scored = scorer.predict(frame)
    score_rate = len(frame) / (time.perf_counter() - started)
    return {
        "image_size": size,
        "batch_size": batch,
        "filters": [32, 64, 128],
        "images_per_s_cnn_fit": round(train_rate, 1),
        "images_per_s_scoring_jpeg_bytes": round(score_rate, 1),
        "scored_errors": int(scored["error"].notna().sum()),
    }


def section_transfer(sizes, data) -> dict:
    """Transfer learning as ``deepspark train --base NAME --fine-tune-layers all`` builds it
    (``models.transfer.build_transfer``: uint8 in, the network's preprocessing inside, a new
    head; BatchNorm frozen by ``unfreeze_top``), weights ``none`` (no download; throughput does
    not depend on them): images/s of ``fit`` with the base frozen (head phase) and with every
    layer but BatchNorm unfrozen (fine-tuning), per network."""
    import keras

    from deepspark.config import make_config
    from deepspark.data.image_inputs import image_schema
    from deepspark.data.schema import ImageSpec
    from deepspark.models.transfer import build_transfer, unfreeze_top

    size, batch, steps = sizes["image_size"], sizes["image_batch"], sizes["image_steps"]
    schema = image_schema(ImageSpec(size, size, 3), target="label", task="multiclass",
                          class_labels=list(range(10)))  # fmt: skip
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch * steps, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, batch * steps)
    figures = {"image_size": size, "batch_size": batch, "steps_per_epoch": steps}
    for name in sizes["transfer_networks"]:
        keras.utils.set_random_seed(0)
        config = make_config({"data": "x", "base": name, "weights": "none"})
        model = build_transfer(schema, config)
        rates = {}
        for phase in ("head", "fine_tune"):
            if phase == "fine_tune":
                unfreeze_top(model, "all")
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            timer = epoch_timer()
            model.fit(images, labels, batch_size=batch, epochs=sizes["image_epochs"],
                      verbose=0, shuffle=False, callbacks=[timer])  # fmt: skip
            rates[phase] = round(batch * steps / min(timer.durations[1:]), 1)
        figures[name] = {
            "images_per_s_head_phase": rates["head"],
            "images_per_s_fine_tuning_all": rates["fine_tune"],
        }
    return figures


SECTIONS = {
    "env": section_env,
    "mlp": section_mlp,
    "distributed": section_distributed,
    "mobilenet": section_mobilenet,
    "cnn": section_cnn,
    "transfer": section_transfer,
}


def worker(args) -> None:
    """Every section for this process's Keras backend; one JSON line per section, at once."""
    sizes = SMOKE if args.smoke else FULL
    for name in args.sections.split(","):
        started = time.perf_counter()
        try:
            result = SECTIONS[name](sizes, args.data)
        except Exception as error:  # one failure must not lose the other figures
            result = {
                "error": f"{type(error).__name__}: {error}"[:1000],
                "where": traceback.format_exc(limit=-3)[-1500:],
            }
        result["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps({"section": name, "result": result}), flush=True)


# ---------------------------------------------------------------------------------- parent


def run_backend(backend: str, args, data: str, timeout: float) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"}
    source = str(HERE.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), source]))
    # JAX takes 75 % of the GPU's memory at start; leave room for the torch baselines.
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    command = [
        sys.executable,
        __file__,
        "--worker-backend",
        backend,
        f"--data={data}",
        f"--sections={args.sections}",
        *(["--smoke"] if args.smoke else []),
    ]
    started = time.perf_counter()
    error = None
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        stdout, stderr = done.stdout, done.stderr
        if done.returncode != 0:
            error = f"exit {done.returncode}"
    except subprocess.TimeoutExpired as expired:
        stdout, stderr = expired.stdout or "", expired.stderr or ""
        error = f"timed out after {timeout:.0f} s"
    stdout = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
    stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    result = {}
    for line in stdout.splitlines():
        if line.startswith('{"section"'):
            record = json.loads(line)
            result[record["section"]] = record["result"]
    if error:
        result["error"] = error
        result["stderr_tail"] = stderr.strip()[-1500:]
    result["child_seconds"] = round(time.perf_counter() - started, 1)
    return result


def gpu_name() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", help="California housing CSV (default: shared, else synthetic)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--budget", type=float, default=280.0, help="seconds for all children")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU test run)")
    parser.add_argument("--json", action="store_true", help="one line of JSON (else indented)")
    parser.add_argument("--worker-backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_backend:
        worker(args)
        return
    started = time.perf_counter()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if not data:
            data = str(SHARED_DATA)
            if not SHARED_DATA.exists():
                data = str(Path(scratch) / "california_synthetic.csv")
                synthetic_california(Path(data))
        per_backend = {}
        for index, backend in enumerate(backends):
            left = args.budget - (time.perf_counter() - started)
            # Share what is left among the children still to run.
            timeout = max(10.0, left / (len(backends) - index))
            per_backend[backend] = run_backend(backend, args, data, timeout)
    result = {
        "benchmark": "gpu_check",
        "smoke": args.smoke,
        "gpu": gpu_name(),
        "data": "california_housing.csv" if data == str(SHARED_DATA) else Path(data).name,
        "backends": per_backend,
        "cpu_count": os.cpu_count(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
