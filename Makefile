# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

# torch's CPU wheel: for Linux, plain PyPI has only the multi-GB CUDA build, so it comes from torch's
# CPU index, unless pip is set up with a local wheel directory (find-links) that holds it, as on the
# project's build machines. TORCH_INDEX=URL picks another index; TORCH_INDEX= uses pip's setup alone.
TORCH_INDEX ?= $(if $(shell $(PYTHON) -m pip config list 2>/dev/null | grep find-links),,https://download.pytorch.org/whl/cpu)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so the rest of the install keeps this wheel
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
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
