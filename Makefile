# avemo: `make demo` (sets up .venv, runs the sample corpus end to end) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

# Inputs and outputs of `make extract | train | eval` (default: the demo's).
MANIFEST ?= $(DEMO)/sample/clips.csv
CACHE    ?= $(DEMO)/cache
RUN      ?= $(DEMO)/run
WEIGHTS  ?= imagenet
APPROACH ?= all
# Where torch and torchvision come from. Empty: PyPI's default build (CUDA libraries included: 6.3 GiB installed);
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: the CPU-only build (1.8 GiB). Takes effect
# when .venv is created or updated: rm -rf .venv to switch. Only torch and torchvision come from there (--no-deps);
# their dependencies, pinned in constraints.txt, from PyPI with the rest.
TORCH_INDEX ?=

.PHONY: install demo test lint bench extract train joint eval clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt --index-url $(TORCH_INDEX) torch torchvision)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

$(DEMO)/sample/clips.csv: | $(STAMP)
	$(BIN)/avemo sample $(DEMO)/sample --clips 150 --seed 0

# The demo's AlexNet starts random (no download): enough for the sample corpus; real data needs imagenet.
demo: $(STAMP) $(DEMO)/sample/clips.csv
	$(MAKE) --no-print-directory extract train joint eval WEIGHTS=none

extract: $(STAMP)
	$(BIN)/avemo extract --manifest $(MANIFEST) --cache $(CACHE) --weights $(WEIGHTS)

train: $(STAMP)
	$(BIN)/avemo train --cache $(CACHE) --run $(RUN) --approach $(APPROACH)

joint: $(STAMP)
	$(BIN)/avemo train --cache $(CACHE) --run $(RUN) --joint

eval: $(STAMP)
	$(BIN)/avemo evaluate --run $(RUN)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/avemo bench extract
	$(BIN)/avemo bench train

lint: $(STAMP)
	$(BIN)/ruff check avemo tests tools && $(BIN)/ruff format --check avemo tests tools
	$(BIN)/python tools/function_lengths.py avemo

clean:
	rm -rf $(DEMO)
