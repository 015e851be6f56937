# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create or refresh .venv idempotently; a stamp makes a second run with nothing changed take seconds.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.box2seg-installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup test demo clean-venv

setup: $(STAMP)
	@echo "box2seg is installed in $(VENV): run 'source $(VENV)/bin/activate' to put the box2seg command on PATH"

$(STAMP): setup.py Makefile tools/install_detectron2.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -c "import detectron2" 2>/dev/null || $(PY) tools/install_detectron2.py
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: setup
	$(PY) projects/Box2Seg/demo.py --output demo_output $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
