# One-command setup and test for a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_STEPS ?= 200
DEMO_SECONDS ?= 300
# Optional: SOURCE=<KITTI drive folder or bag>  CHECKPOINT=<.ckpt>
DEMO_ARGS = --steps $(DEMO_STEPS) --seconds $(DEMO_SECONDS) $(if $(SOURCE),--source $(SOURCE)) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

.PHONY: setup test lint bench demo clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (ROS 2 Jazzy wheels), found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The suite includes test/test_lint.py (ruff, as ament_flake8/ament_pep257 in ROS 2 packages).
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(VENV)/bin/packnet-ros demo --out demo_out $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

bench: setup
	$(PY) benchmarks/bench_depth.py --out bench_out/depth.json
	$(PY) benchmarks/bench_training.py --out bench_out/training.json
