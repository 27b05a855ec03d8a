# The two commands of the README. Each sets up everything it needs in .venv first, from the lock.
#   make quickstart   install, then run the main job on the embedded default (synthetic world)
#   make test         install, then run the test suite (what .ci/run calls)
# Dependencies:
#   make lock         remake requirements.lock and jobs/requirements.txt from pyproject.toml's ranges
#                     (pins already in the lock are kept; `make lock UPGRADE=--upgrade` takes the newest)
#   make test-newest  the suite in a fresh .venv-newest with the newest releases pyproject allows, no lock
#   make bench-peers  .venv-peers: the peer libraries of `rectune bench train` (torch-rechub), never in .venv
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
PINS   := jobs/requirements.txt
PIP    := python -m pip install --quiet --disable-pip-version-check

.PHONY: install quickstart test test-newest lock bench bench-peers clean

# -c: the lock constrains every package pip installs (torch 2.13.0 matches the CPU build on disk here
# and the CUDA build from PyPI on a GPU machine) and installs nothing it does not need.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) -c $(LOCK) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/rectune quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

NEWEST ?= .venv-newest

test-newest:
	rm -rf $(NEWEST)
	$(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/$(PIP) -e '.[test]'
	$(NEWEST)/bin/python -m pip list --format=freeze --disable-pip-version-check > $(NEWEST)/versions.txt
	RECTUNE_UNLOCKED=1 $(NEWEST)/bin/python -m pytest

# The lock: every extra, every Python rectune supports (3.10 up) and every platform (universal), so
# that this machine, a GPU cluster's nodes and CI install one set. jobs/requirements.txt: rectune's
# own requirements at the locked versions, which a job's runtime env installs.
UV     ?= uv==0.13.10
LOCKER := .venv-lock
UPGRADE ?=
COMPILE = $(LOCKER)/bin/uv pip compile pyproject.toml --universal --python-version 3.10 --quiet \
	--custom-compile-command 'make lock' $(UPGRADE)

lock:
	test -x $(LOCKER)/bin/uv || ($(PYTHON) -m venv $(LOCKER) && $(LOCKER)/bin/$(PIP) '$(UV)')
	$(COMPILE) --all-extras -o $(LOCK)
	$(COMPILE) --extra postgres --no-deps --no-annotate -c $(LOCK) -o $(PINS)

bench: $(STAMP)
	$(BIN)/rectune bench synth

PEERS ?= .venv-peers

bench-peers:
	$(PYTHON) -m venv $(PEERS) && $(PEERS)/bin/pip install --quiet --disable-pip-version-check -r platform/rectune/bench/peers-requirements.txt

clean:
	rm -rf $(VENV) $(NEWEST) $(LOCKER) rectune-quickstart .pytest_cache
