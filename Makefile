# kneeseg developer commands. `make test` is the README's test command and what CI runs.
PY_BOOT ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
STAMP   := $(VENV)/.kneeseg-installed
PYTEST_ARGS ?=

.PHONY: venv demo test test-pydicom24 bench-networks docs-networks clean

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

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The pure-DICOM layer must also work with pydicom 2.4 (MONAI Label's environment pins pydicom<3).
VENV24 ?= .venv-pydicom24
$(VENV24)/.installed:
	$(PY_BOOT) -m venv $(VENV24)
	$(VENV24)/bin/python -m pip install -q numpy nibabel "pydicom>=2.4,<3" pytest pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls pillow
	touch $@

test-pydicom24: $(VENV24)/.installed
	PYTHONPATH=$(CURDIR) $(VENV24)/bin/python -m pytest -q -p no:cacheprovider tests/test_dicom_series.py

bench-networks: $(STAMP)
	$(PY) benchmarks/networks.py

docs-networks: $(STAMP)
	$(PY) docs/scripts/networks_table.py
	$(PY) docs/scripts/networks_figure.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
