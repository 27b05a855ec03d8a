# The two commands of the README. Each sets up everything it needs in .venv first.
#   make quickstart   install, then run the main job on the embedded default (synthetic world)
#   make test         install, then run the test suite (what .ci/run calls)
#   make bench-peers  .venv-peers: the peer libraries of `rectune bench train` (torch-rechub), never in .venv
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install quickstart test bench bench-peers clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/rectune quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/rectune bench synth

PEERS ?= .venv-peers

bench-peers:
	$(PYTHON) -m venv $(PEERS) && $(PEERS)/bin/pip install --quiet --disable-pip-version-check -r platform/rectune/bench/peers-requirements.txt

clean:
	rm -rf $(VENV) rectune-quickstart .pytest_cache
