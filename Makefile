# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv/ first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU wheel used when no torch is installed yet; a machine that already has a
# (CUDA) torch keeps it: the venv then sees the system site-packages, and where that
# Python is itself a venv (whose packages --system-site-packages does not reach), a .pth
# file adds the parent venv's site-packages.
TORCH_CPU ?= torch==2.13.0

.PHONY: install demo test test-fast test-mpi bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "using the torch already installed for $(PYTHON)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	    if $(PYTHON) -c "import sys; sys.exit(sys.prefix == sys.base_prefix)"; then \
	        $(PYTHON) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	            > "$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_parent_venv.pth"; \
	    fi; \
	else \
	    $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip && \
	    $(PY) -m pip install -q "$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: install
	$(PY) -m executor.demo

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not mpi and not notebook"

bench: install
	$(PY) bench/simulator_speed.py
	$(PY) bench/prediction_accuracy.py
	$(PY) bench/executor_vs_torch.py
	$(PY) bench/executor_overhead.py
	$(VENV)/bin/mpiexec -n 2 $(PY) bench/executor_handlers.py
	$(PY) bench/planner_speed.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
