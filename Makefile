# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: demo demo-text test test-gpu bench load bundle package offline clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[optimizer,aws,gcp,azure,text,dev]'
	touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

# node_modules too, so that `npx osls deploy` follows the demo with nothing else to install
demo: $(STAMP) $(NPM_STAMP)
	$(BIN)/python examples/digits/demo.py

# the second demo: all-MiniLM-L6-v2 sentence embeddings, optimized, served, asked with `slimserve invoke --text`
demo-text: $(STAMP)
	$(BIN)/python examples/minilm/demo.py

# SLIMSERVE_TESTS_REQUIRE_TOOLS=1: a test whose tool (node and npm packages, python3.12, emulators) is
# missing fails, naming it, instead of skipping (tests/tools.py).
# ruff (pyproject.toml [tool.ruff]) lints and checks the formatting first: `ruff format .` fixes the latter.
test: $(STAMP) $(NPM_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	SLIMSERVE_TESTS_REQUIRE_TOOLS=1 $(BIN)/python -m pytest -q

# On a machine with an NVIDIA GPU (CUDA 12, cuDNN 9): the endpoint's CUDA answers against its CPU answers,
# in .venv-gpu where onnxruntime-gpu replaces onnxruntime (both install the same module). Not part of `test`.
GPU_VENV := .venv-gpu
test-gpu:
	$(PY) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q --upgrade pip
	$(GPU_VENV)/bin/pip install -q -e '.[aws,text]' pytest onnx
	$(GPU_VENV)/bin/pip uninstall -q -y onnxruntime
	$(GPU_VENV)/bin/pip install -q "onnxruntime-gpu==1.31.1"
	SLIMSERVE_TESTS_REQUIRE_GPU=1 $(GPU_VENV)/bin/python -m pytest -q tests/endpoint/test_gpu_equivalence.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

# bounded load and soak on loopback (8 clients x 60 s per artifact); not part of make test
load: $(STAMP)
	$(BIN)/python bench/load.py

# The Lambda zip serverless.yml deploys (package.artifact); ARTIFACT defaults to the demo's digits artifact.
ARTIFACT ?= artifacts/digits/1
bundle: $(STAMP)
	$(BIN)/slimserve bundle $(ARTIFACT) --target aws-lambda --out dist/aws-lambda

# osls builds (or reuses) the zip itself, through infra/aws/bundle-plugin.js
package: $(STAMP) $(NPM_STAMP)
	node_modules/.bin/osls package --param="bundleArtifact=$(ARTIFACT)"

# serverless-offline serving the HTTP function from the source tree (see serverless.offline.yml)
offline: $(STAMP) $(NPM_STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) node_modules/.bin/osls offline start --config serverless.offline.yml

clean:
	rm -rf $(VENV) node_modules .serverless artifacts dist
