# kneeseg developer commands. `make test` is the README's test command and what CI runs.
PY_BOOT ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
STAMP   := $(VENV)/.kneeseg-installed
PYTEST_ARGS ?=

# MONAI Label 0.8.5 server environment (separate venv: it needs numpy<2 and pydicom<3).
# Recipe and pins: kneeseg/monailabel/requirements.txt and constraints.txt; docs/monai_label.md.
LABEL_PY_BOOT ?= python3.11
LABEL_VENV    ?= .venv-label
LABEL_PY      := $(LABEL_VENV)/bin/python
LABEL_PIP     := $(LABEL_PY) -m pip
LABEL_REQS    := kneeseg/monailabel/requirements.txt
LABEL_CONS    := kneeseg/monailabel/constraints.txt
LABEL_STAMP   := $(LABEL_VENV)/.kneeseg-label-installed

.PHONY: venv demo test test-cuda test-pydicom24 bench-networks docs-networks label-env label-server clean

$(PY):
	$(PY_BOOT) -m venv $(VENV)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[dev,onnx,dicom-seg]"
	touch $(STAMP)

venv: $(STAMP)

# The README's first command: phantom -> train (cpu preset, via the bundle) -> evaluate -> infer -> PNGs.
demo: $(STAMP)
	$(PY) -m kneeseg.demo --out out/demo --fresh

# label-env: tests/test_monai_label.py runs a real MONAI Label server (about 2 min to create).
test: $(STAMP) $(LABEL_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# the CUDA paths (fp16 AMP + GradScaler, NCCL, GPU inference): skipped by `make test` without a GPU
test-cuda: $(STAMP)
	$(PY) -m pytest -m cuda -rA tests/test_cuda.py $(PYTEST_ARGS)

# The pure-DICOM layer must also work with pydicom 2.4 (MONAI Label's environment pins pydicom<3).
VENV24 ?= .venv-pydicom24
$(VENV24)/.installed:
	$(PY_BOOT) -m venv $(VENV24)
	$(VENV24)/bin/python -m pip install -q numpy nibabel "pydicom>=2.4,<3" pytest pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls pillow
	touch $@

test-pydicom24: $(VENV24)/.installed
	PYTHONPATH=$(CURDIR) $(VENV24)/bin/python -m pytest -q -p no:cacheprovider tests/test_dicom_series.py tests/test_dicom_problems.py

bench-networks: $(STAMP)
	$(PY) benchmarks/networks.py

docs-networks: $(STAMP)
	$(PY) docs/scripts/networks_table.py
	$(PY) docs/scripts/networks_figure.py

# ---- MONAI Label (docs/monai_label.md); the LABEL_* variables are defined at the top ----

$(LABEL_STAMP): $(LABEL_REQS) $(LABEL_CONS)
	@echo "[label-env 1/5] venv $(LABEL_VENV) ($(LABEL_PY_BOOT))"
	@test -x $(LABEL_PY) || $(LABEL_PY_BOOT) -m venv $(LABEL_VENV)
	@echo "[label-env 2/5] torch==$(TORCH_VERSION) (local CPU wheel, installed first so nothing replaces it)"
	@$(LABEL_PIP) install -q torch==$(TORCH_VERSION)
	@echo "[label-env 3/5] monailabel==0.8.5, pydicom-seg==0.4.1, torchvision==0.16.2 (--no-deps)"
	@$(LABEL_PIP) install -q --no-deps -c $(LABEL_CONS) monailabel==0.8.5 pydicom-seg==0.4.1 torchvision==0.16.2
	@echo "[label-env 4/5] MONAI Label and kneeseg runtime requirements (-c $(LABEL_CONS))"
	@echo "  (pip's resolver then reports 3 expected conflicts: sam2 not installed, pydicom-seg wants jsonschema<4, torchvision 0.16.2 wants torch 2.1.2)"
	@$(LABEL_PIP) install -q -c $(LABEL_CONS) -r $(LABEL_REQS)
	@echo "[label-env 5/5] kneeseg (editable, --no-deps) and import check"
	@$(LABEL_PIP) install -q --no-deps -e .
	@$(LABEL_PY) -W ignore -c "import torch, torchvision.utils, monai, monailabel, kneeseg.networks, pydicom_seg; print('  torch', torch.__version__, '| monai', monai.__version__, '| monailabel', monailabel.__version__)"
	@touch $@
	@echo "[label-env] ready: $(LABEL_VENV)"

label-env: $(LABEL_STAMP)

# MONAI Label server in the foreground (Ctrl-C stops it). The app is prepared once under LABEL_APP
# (bundle + CKPT); later runs reuse it, so checkpoints trained from 3D Slicer survive a restart.
# FRESH=1 re-creates it; LABEL_SET='width=8 spatial_size=128' substitutes bundle values.
CKPT      ?= models/model.pt
STUDIES   ?= out/label/studies
PORT      ?= 8000
LABEL_APP ?= out/label/app
LABEL_SET ?=
FRESH     ?=

label-server: $(LABEL_STAMP)
	@if [ -n "$(FRESH)" ] || [ ! -f $(LABEL_APP)/main.py ]; then \
	  $(LABEL_PY) -m kneeseg.monailabel prepare --app $(LABEL_APP) --venv $(LABEL_VENV) \
	    $(if $(or $(wildcard $(CKPT)),$(filter-out file,$(origin CKPT))),--ckpt $(CKPT),) $(foreach kv,$(LABEL_SET),--set $(kv)) || exit 1; \
	else echo "reusing $(LABEL_APP) (FRESH=1 re-creates it)"; fi
	@$(LABEL_PY) -m kneeseg.monailabel serve --app $(LABEL_APP) --studies $(STUDIES) --port $(PORT) --venv $(LABEL_VENV)

clean:
	rm -rf $(VENV) $(LABEL_VENV) build *.egg-info .pytest_cache
