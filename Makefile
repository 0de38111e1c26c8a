# Entry points: see README.md. Everything runs in the project's virtual environment.
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)

# make demo [DATASET=synthetic|flickr8k|flickr30k|karpathy] [DATA_DIR=...] [NUM_IMAGES=3000] [PORT=7860]
DATASET ?= synthetic
DATA_DIR ?=
NUM_IMAGES ?= 3000
EPOCHS ?= 15
PORT ?= 7860
RUN ?= models/$(if $(filter synthetic,$(DATASET)),default,$(DATASET))

.PHONY: venv test test-fast clean-venv demo

venv: $(STAMP)

$(STAMP): requirements.txt requirements/common.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow"

clean-venv:
	rm -rf $(VENV)

demo: venv
	$(PY) -m train.pipeline --dataset $(DATASET) --run $(RUN) --num-images $(NUM_IMAGES) --epochs $(EPOCHS) \
		$(if $(DATA_DIR),--data-dir $(DATA_DIR),)
	$(PY) -m demo serve --model $(RUN)/onnx --port $(PORT)
