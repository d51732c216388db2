# One-command setup and test for a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_STEPS ?= 100
DEMO_SECONDS ?= 300
# Optional: SOURCE=<KITTI drive folder or bag>  CHECKPOINT=<.ckpt>
DEMO_ARGS = --steps $(DEMO_STEPS) --seconds $(DEMO_SECONDS) $(if $(SOURCE),--source $(SOURCE)) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(ARGS)

.PHONY: setup test lint bench bench-learning demo pretrained clean

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

# Learning curves (DEVELOPERS.md): ~40 min on 2 CPU cores, a few on a GPU.
LEARNING_RECIPES ?= paper,loss_both_fwd
bench-learning: setup
	$(PY) benchmarks/bench_learning.py --dataset kitti --recipes $(LEARNING_RECIPES) --out bench_out/learning
	$(PY) benchmarks/bench_learning.py --dataset synthetic --recipes $(LEARNING_RECIPES) --out bench_out/learning

# The demo's starting model (models/synthetic_scale_free.ckpt): PackNetSlim01 x0.125 trained
# 1500 steps on synthetic drive 1 *without* the velocity loss (scale-ambiguous, like most
# self-supervised models), float16, with its PoseNet. ~15 min on 2 CPU cores, ~3 on a GPU.
PRETRAIN_DEVICE ?= auto
pretrained: setup
	rm -rf build/pretrain && mkdir -p build/pretrain models
	$(VENV)/bin/packnet-ros synth build/pretrain/drive --frames 300 --seed 1 --width 192 --height 64
	$(VENV)/bin/packnet-ros train --data build/pretrain/drive/2000_01_01/2000_01_01_drive_0001_sync \
		--out build/pretrain/ckpts --config config/pretrain.yaml --steps 1500 --device $(PRETRAIN_DEVICE)
	$(VENV)/bin/packnet-ros strip --keep-pose --half build/pretrain/ckpts/step_000001500.ckpt \
		models/synthetic_scale_free.ckpt
