# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so pip takes the CPU wheel instead of a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,ray,wandb]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m mimo_runtime.launch.demo

test: $(STAMP)
	GLOO_SOCKET_IFNAME=lo $(PY) -m pytest -q -x -p no:cacheprovider tests $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/mimo-run bench --json

clean:
	rm -rf $(VENV) runs
