PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := $(VENV)/.extras-installed
BENCH := $(VENV)/.bench-installed
ARGS ?=

.PHONY: venv extras demo test test-fast test-reliability lint bench protos lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The optional format runtimes (torch, tensorflow-cpu, llama-cpp-python, xgboost, lightgbm):
# `make test` installs them so every format's tests run; `make venv` stays light.
$(EXTRAS): $(STAMP) requirements-extras.lock
	$(PY) -m pip install --quiet -r requirements.lock -r requirements-extras.lock
	touch $(EXTRAS)

extras: $(EXTRAS)

# The serving benchmark's reference endpoint (Starlette); nothing else uses it.
$(BENCH): $(STAMP) requirements-bench.lock
	$(PY) -m pip install --quiet -r requirements.lock -r requirements-bench.lock
	touch $(BENCH)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slipway demo $(ARGS)

test: $(STAMP) $(EXTRAS)
	SLIPWAY_TEST_EXTRAS_REQUIRED=1 SLIPWAY_TEST_BROWSER_REQUIRED=1 $(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -x -m "not slow and not postgres" $(ARGS)

# Faults, overload, hostile input, crashes, replicas (docs/reliability.md); `make test` runs it too.
test-reliability: $(STAMP)
	$(PY) -m pytest -q tests/reliability $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: $(STAMP) $(BENCH)
	$(PY) bench/serving/run.py $(ARGS)

# The V2 gRPC stubs are committed; regenerate them after editing the .proto.
protos: $(STAMP)
	cd src && ../$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		slipway/serving/grpc_v2/grpc_predict_v2.proto

lock:
	$(PYTHON) -m venv /tmp/slipway-lock && /tmp/slipway-lock/bin/pip install -q -e ".[postgres,dev]" && \
	/tmp/slipway-lock/bin/pip freeze --exclude-editable | grep -v '^slipway' > requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
