# deepspark: `make demo` and `make test` are the two commands a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deepspark-installed
HOROVOD_STAMP := $(VENV)/.deepspark-horovod
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup horovod browser demo test lint bench clean

setup: $(STAMP)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml src/deepspark/_keras_default.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv installs the same pins from pip's own sources in about 60% of pip's time
	# (scripts/uv_install.py); pip installs them wherever uv cannot.
	$(BIN)/pip install --quiet 'uv>=0.13,<0.14' \
	  && $(BIN)/python scripts/uv_install.py torch==2.13.0 -e '.[dev,spark,explain,torch]' \
	  || { $(BIN)/pip install --quiet --upgrade pip \
	       && $(BIN)/pip install --quiet torch==2.13.0 \
	       && $(BIN)/pip install --quiet -e '.[dev,spark,explain,torch]'; }
	# `import keras` before `import deepspark` picks JAX, not the absent TensorFlow.
	$(BIN)/python -c 'from deepspark._keras_default import install; install()'
	touch $(STAMP)

# Horovod 0.28.1 built for this venv's torch (C++17 fix), wheel cached by torch version under
# $${DEEPSPARK_WHEEL_CACHE:-~/.cache/deepspark/wheels}: built once (~4-10 min), then reinstalled.
horovod: $(HOROVOD_STAMP)

$(HOROVOD_STAMP): $(STAMP) scripts/build_horovod.sh
	PYTHON=$(BIN)/python scripts/build_horovod.sh
	touch $(HOROVOD_STAMP)

demo: setup
	$(BIN)/python -m deepspark.demo

# The try-it page's browser test drives Debian's chromium (Playwright's own download is not
# needed); installed when missing and apt-get is at hand, else the test says how.
browser:
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the serving page test will fail; apt-get install chromium"

# The default suite on the default Keras backend (JAX), in 3 processes on 2 cores (tests wait on
# subprocesses, JVMs and servers; 4 processes measured no faster); a test module stays in
# one process (module fixtures are shared); the slowest files go first (tests/conftest.py). Then
# the backend-parity set on torch. The slowest tests are listed at the end.
PYTEST := $(BIN)/python -m pytest -q --dist loadfile --no-loadscope-reorder --durations=25
test: setup horovod browser
	$(PYTEST) -n 3
	KERAS_BACKEND=torch $(PYTEST) -n 3 -m parity

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_tabular.py --json
	$(BIN)/python benchmarks/bench_fit_overhead.py --json
	$(BIN)/python benchmarks/bench_spark_scoring.py --json
	$(BIN)/python benchmarks/bench_explain.py --json
	$(BIN)/python benchmarks/bench_distributed.py --json
	$(BIN)/python benchmarks/bench_stream.py --json
	$(BIN)/python benchmarks/bench_scale.py --json --rows 1000000,8000000
	$(BIN)/python benchmarks/bench_cluster_scale.py --json

clean:
	rm -rf $(VENV) demo-output .pytest_cache
