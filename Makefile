# cookline: `make run` runs the iris pipeline end to end; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
GEN    := clients/python/cookline/v1
OIPGEN := clients/python/inference
PROTOS := $(wildcard protos/cookline/v1/*.proto) $(wildcard protos/inference/*.proto)
# tritonclient, the independent OIP v2 client of the serving tests, lives in its
# own venv: it needs protobuf<7, the project pins protobuf 7 (pins in
# tests/support/tritonclient-requirements.txt).
TRITON_VENV := .cache/tritonclient

.PHONY: install proto docs run up lint test test-unit test-integration test-e2e bench-serving examples-data bench clean

include clients/clients.mk deploy/deploy.mk

install: $(VENV)/.installed $(GEN)/.generated $(TRITON_VENV)/.installed

# The venv is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The generated package must exist for the editable install; `make proto` fills it.
	mkdir -p $(GEN) $(OIPGEN) && touch $(GEN)/__init__.py $(OIPGEN)/__init__.py
	$(BIN)/pip install --quiet -e ".[server,dev,test]"
	touch $@

# Python stubs generated from protos/ (gitignored; never edited by hand):
# cookline.v1 and the OIP v2 package `inference`, in one protoc run.
proto: $(GEN)/.generated
$(GEN)/.generated: $(PROTOS) $(VENV)/.installed
	rm -rf $(GEN) $(OIPGEN) && mkdir -p $(GEN) $(OIPGEN)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=clients/python \
	  --pyi_out=clients/python --grpc_python_out=clients/python $(PROTOS)
	echo '"""Generated from protos/cookline/v1 by `make proto`. Do not edit."""' > $(GEN)/__init__.py
	echo '"""Generated from protos/inference by `make proto`. Do not edit."""' > $(OIPGEN)/__init__.py
	touch $@

$(TRITON_VENV)/.installed: tests/support/tritonclient-requirements.txt
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet -r tests/support/tritonclient-requirements.txt
	touch $@

# Start the stack on the embedded local store, run examples/iris.yaml end to
# end, stream a few predictions, stop the stack.
# The services' own logs go to $(RUN_LOGS)/<service>.log (printed), so the terminal shows the run.
RUN_LOGS := .cache/run-logs
run: install
	@set -e; mkdir -p $(RUN_LOGS); $(BIN)/cookline up --log-dir $(RUN_LOGS) & UP=$$!; \
	trap 'kill $$UP 2>/dev/null; wait $$UP' EXIT; \
	$(BIN)/cookline health --wait 120 >/dev/null 2>&1 || { echo "the services did not start: see $(RUN_LOGS)/<service>.log"; exit 1; }; \
	$(BIN)/cookline run examples/iris.yaml; \
	awk 'NR == 1 || NR % 30 == 2' examples/data/iris.csv > $(VENV)/iris-sample.csv; \
	$(BIN)/cookline predict iris --input $(VENV)/iris-sample.csv --stream

# Start the five services in the foreground (Ctrl-C stops them).
up: install
	$(BIN)/cookline up

# The pure-JavaScript TF.js (and the PNG/JPEG decoders) the TF.js export is checked with (tests/support/tfjs).
TFJS := tests/support/tfjs/node_modules/.installed
$(TFJS): tests/support/tfjs/package-lock.json
	npm ci --prefix tests/support/tfjs --no-audit --no-fund --loglevel=error
	touch $@

# ruff (lint and format check), mypy on the Python packages, buf lint on the protos and
# buf breaking against the protos of the previous commit (the first parent on main).
BUF_AGAINST ?= $(shell git rev-parse --git-common-dir)\#ref=HEAD~1,subdir=protos
lint: install $(GO_BIN)/buf
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(GO_BIN)/buf lint
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then $(GO_BIN)/buf breaking --against '$(BUF_AGAINST)'; fi

# Every test (tests/unit, tests/integration, tests/e2e); the markers `unit`, `integration`
# and `e2e` are set by folder (tests/conftest.py).
test: install tools $(TFJS)
	$(BIN)/python -m pytest -q

# In-process code only: starts no server process (no SeaweedFS, no service).
# The generated reference docs (docs/pipeline-reference.md, docs/configuration.md's table) from the
# proto comments, the spec package and cookline.settings; tests/unit/test_reference_docs.py checks them.
docs: install
	$(BIN)/python tests/support/reference_docs.py

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

# Real processes, SeaweedFS, in-process gRPC servers, kustomize/kubeconform; not the whole stack.
test-integration: install tools
	$(BIN)/python -m pytest -q tests/integration

# The five services as real processes, the Node/Go clients, tritonclient, podman compose.
test-e2e: install tools $(TFJS)
	$(BIN)/python -m pytest -q tests/e2e

# The serving benchmark (not part of `make test`): cookline vs in-process
# predict, bare gRPC servers (an echo; decode + predict + encode, threaded and aio),
# KServe and MLServer (each in its own venv under
# .cache/bench/, created on first use).
bench-serving: install
	$(BIN)/python bench/serving.py
# Regenerate the committed example data: examples/data/digits/ (scikit-learn's load_digits
# as 8x8 PNGs) and examples/data/text.csv.
examples-data: install
	$(BIN)/pip install --quiet -e ".[server,dev,test,examples]"
	rm -rf examples/data/digits
	$(BIN)/python examples/tools/make_digits.py
	$(BIN)/python examples/tools/make_text_csv.py

# The data-plane benchmarks: throughput against raw gRPC and tf.data service, then RSS at
# 1 GB and 4 GB (needs about 9 GB of free disk under $$TMPDIR).
bench: install
	$(BIN)/python bench/data_plane.py
	$(BIN)/python bench/memory.py --gb 1 4

clean:
	rm -rf $(VENV) $(GEN) $(OIPGEN) $(GO_GEN) clients/node/node_modules .pytest_cache .hypothesis
