# Entry points: see README.md. Everything runs in the project's virtual environment.
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)

# make demo [DATASET=synthetic|flickr8k|flickr30k|karpathy|folder] [DATA_DIR=...] [VGG_WEIGHTS=imagenet|calibrated|none|PATH] [ENGINE=auto|onnx|keras] [NUM_IMAGES=3000] [EPOCHS=N] [PORT=7860]
DATASET ?= synthetic
DATA_DIR ?=
# VGG_WEIGHTS empty: ImageNet's, and offline for the synthetic scenes, calibrated (python -m pipeline --help)
VGG_WEIGHTS ?=
# ENGINE: what computes the feature cache: onnx (the encoder graph the bundle serves), keras, or auto (the faster here)
ENGINE ?= auto
NUM_IMAGES ?= 3000
# EPOCHS empty: fit's own default (python -m train fit --help), the same for make demo and train fit
EPOCHS ?=
PORT ?= 7860
RUN ?= models/$(if $(filter synthetic,$(DATASET)),default,$(DATASET))

# Every requirements file a user or a Space installs; check-requirements resolves each for Linux x86_64,
# Python 3.11, against the package index (wheel metadata only: no GPU, no gigabytes of CUDA wheels).
REQUIREMENT_FILES := requirements.txt requirements-gpu.txt demo/requirements.txt demo/requirements-gpu.txt

.PHONY: venv test test-fast clean-venv demo check-requirements gpu-check lint

venv: $(STAMP)

$(STAMP): requirements.txt requirements/common.txt requirements/ray.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

check-requirements: venv
	@for file in $(REQUIREMENT_FILES); do \
		$(VENV)/bin/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
			--output-file /dev/null $$file || { echo "check-requirements: $$file does not resolve" >&2; exit 1; }; \
		echo "check-requirements: $$file resolves"; \
	done

# On a CUDA machine: fresh env from requirements-gpu.txt, train/export/serve/bench on CUDA, one table (~10 min)
gpu-check:
	$(PYTHON_BOOT) scripts/gpu_check.py

lint: venv
	$(VENV)/bin/ruff check .

# Two workers, whole files each (module fixtures are built once): on 2 cores much of the suite waits on servers and
# child processes. Files go out in conftest's order (xdist would reorder them by test count). --durations: where
# the time goes (CI's log included).
PYTEST_WORKERS := -n 2 --dist loadfile --no-loadscope-reorder

test: venv
	$(PY) -m pytest $(PYTEST_WORKERS) --durations=25

test-fast: venv
	$(PY) -m pytest $(PYTEST_WORKERS) -m "not slow"

clean-venv:
	rm -rf $(VENV)

demo: venv
	$(PY) -m pipeline --dataset $(DATASET) --run $(RUN) --num-images $(NUM_IMAGES) \
		$(if $(EPOCHS),--epochs $(EPOCHS),) $(if $(DATA_DIR),--data-dir $(DATA_DIR),) \
		$(if $(VGG_WEIGHTS),--vgg-weights $(VGG_WEIGHTS),) --engine $(ENGINE)
	$(PY) -m demo serve --model $(RUN)/onnx --port $(PORT)
