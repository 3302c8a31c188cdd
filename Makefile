# cookline: `make run` runs the iris pipeline end to end; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
GEN    := clients/python/cookline/v1
PROTOS := $(wildcard protos/cookline/v1/*.proto)

.PHONY: install proto run up test test-unit examples-data bench clean

install: $(VENV)/.installed $(GEN)/.generated

# The venv is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The generated package must exist for the editable install; `make proto` fills it.
	mkdir -p $(GEN) && touch $(GEN)/__init__.py
	$(BIN)/pip install --quiet -e ".[server,dev,test]"
	touch $@

# Python stubs generated from protos/ (gitignored; never edited by hand).
proto: $(GEN)/.generated
$(GEN)/.generated: $(PROTOS) $(VENV)/.installed
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=clients/python \
	  --pyi_out=clients/python --grpc_python_out=clients/python $(PROTOS)
	echo '"""Generated from protos/cookline/v1 by `make proto`. Do not edit."""' > $(GEN)/__init__.py
	touch $@

# Start the stack on the embedded local store, run examples/iris.yaml end to
# end, stream a few predictions, stop the stack.
run: install
	@set -e; $(BIN)/cookline up & UP=$$!; trap 'kill $$UP 2>/dev/null; wait $$UP' EXIT; \
	$(BIN)/cookline health --wait 120; \
	$(BIN)/cookline run examples/iris.yaml; \
	awk 'NR == 1 || NR % 30 == 2' examples/data/iris.csv > $(VENV)/iris-sample.csv; \
	$(BIN)/cookline predict iris --input $(VENV)/iris-sample.csv --stream

# Start the five services in the foreground (Ctrl-C stops them).
up: install
	$(BIN)/cookline up

test: install
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q -m "not e2e"

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
	rm -rf $(VENV) $(GEN) .pytest_cache .hypothesis
