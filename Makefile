# make test  : build .venv from nothing (numpy, mpi4py, the mpich wheel for a local mpiexec,
#              torch pinned to the CPU build) and run the whole suite.
# make bench : the main job (benchmark suite on local MPI ranks).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.ringps-installed
NP      ?= 4
PYTEST_ARGS ?=

.PHONY: venv test bench clean

venv: $(STAMP)

$(STAMP): setup.py constraints.txt collectives/transport/_board.c
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,torch,bench]'
	touch $(STAMP)

test: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest tests $(PYTEST_ARGS)

bench: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m bench suite --np $(NP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
