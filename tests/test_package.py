"""Import cost and public API: ``import deepspark`` and ``deepspark --help`` stay light."""

import subprocess
import sys

import deepspark


def test_import_loads_no_heavy_library():
    code = (
        "import sys, deepspark; heavy = [m for m in ('jax', 'torch', 'keras', 'mlflow', 'pyspark', "
        "'sklearn') if m in sys.modules]; print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_cli_help_loads_no_heavy_library():
    code = (
        "import sys\nfrom deepspark.cli.main import main\ntry:\n    main(['--help'])\n"
        "except SystemExit as done:\n    assert done.code == 0\n"
        "heavy = [m for m in ('jax', 'torch', 'keras', 'mlflow') if m in sys.modules]\n"
        "sys.stderr.write(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "train" in done.stdout
    assert done.stderr.strip() == ""


def test_public_api():
    assert set(deepspark.__all__) == {
        "TrainConfig",
        "TrainResult",
        "TuneResult",
        "__version__",
        "classify",
        "explain",
        "featurize",
        "find_learning_rate",
        "fine_tune",
        "list_models",
        "list_runs",
        "load_checkpoint",
        "load_model",
        "log_pretrained",
        "predict",
        "register_model",
        "train",
        "tune",
        "visualize",
    }
    for name in deepspark.__all__:
        assert getattr(deepspark, name) is not None
    assert callable(deepspark.explain)
