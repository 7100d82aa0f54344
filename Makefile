# Two commands on a fresh clone (needs only python3 with venv and pip, and make):
#   make run    install, then train the lecture's three networks on real MNIST and compare them (~10 min, 2 cores)
#   make test   install the development dependencies, then run the tests
# and, while working on the code:
#   make test-fast   the tests that need no real data, browser, GPU, other processes or network namespaces and are
#                    quick (under 2 minutes on 2 cores); pyproject.toml describes the markers
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test test-fast install dev clean

run: $(VENV)/.installed
	$(BIN)/cnnlab train --model lecture

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

FAST := not (real_data or browser or gpu or processes or netns or slow)

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "$(FAST)"

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
