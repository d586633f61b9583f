# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CLI := $(VENV)/bin/dls-microscopy
DEMO_DIR ?= demo_output
# Separately installable plugin packages, installed into the same .venv and tested by `make test`.
PLUGINS := plugins/dls-microscopy-cellpose
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k zarr -x"`.
PYTEST_ARGS ?=
# GUI tests (marker `gui`) need a display: run the suite under a virtual X server where xvfb-run exists
# (without one and without $DISPLAY they are skipped).
XVFB := $(shell command -v xvfb-run >/dev/null 2>&1 && echo "xvfb-run -a -s '-screen 0 1280x1024x24'")

.PHONY: demo test venv bench lint clean docs screenshots

venv: $(VENV)/.installed

# torch goes in first, pinned by constraints.txt, so that nothing pulls another build.
$(VENV)/.installed: pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch torchvision
	$(PIP) install --quiet -c constraints.txt -e '.[dev]' $(addprefix -e ,$(PLUGINS))
	touch $@

demo: venv
	$(CLI) sample $(DEMO_DIR)/sample_data --plate --overwrite
	$(CLI) convert $(DEMO_DIR)/sample_data/synthetic_nuclei.ome.tif $(DEMO_DIR)/synthetic_nuclei.ome.zarr \
		--labels truth=$(DEMO_DIR)/sample_data/synthetic_nuclei_labels.ome.tif --overwrite
	$(CLI) segment $(DEMO_DIR)/synthetic_nuclei.ome.zarr --channel DAPI --diameter 7 --overwrite
	$(CLI) info $(DEMO_DIR)/synthetic_nuclei.ome.zarr
	$(CLI) evaluate $(DEMO_DIR)/synthetic_nuclei.ome.zarr/labels/nuclei $(DEMO_DIR)/synthetic_nuclei.ome.zarr/labels/truth
	$(CLI) convert $(DEMO_DIR)/sample_data/nuclei_1135.h5:/raw $(DEMO_DIR)/nuclei_1135.ome.zarr \
		--labels gold=$(DEMO_DIR)/sample_data/nuclei_1135.h5:/label --overwrite
	$(CLI) segment $(DEMO_DIR)/nuclei_1135.ome.zarr --diameter 3.2 --overwrite
	$(CLI) evaluate $(DEMO_DIR)/nuclei_1135.ome.zarr/labels/nuclei $(DEMO_DIR)/nuclei_1135.ome.zarr/labels/gold
	# the whole pipeline, headless, from the example config: segment → mesh → features on every plate field
	$(CLI) run $(DEMO_DIR)/sample_data/pipeline.yaml
	$(CLI) run $(DEMO_DIR)/sample_data/pipeline_nuclei_1135.yaml
	@echo "Demo results are in $(abspath $(DEMO_DIR)): open the .ome.zarr stores with 'dls-microscopy info' or napari;"
	@echo "pipeline tables (objects/images/wells/plates .parquet), run.log and manifests in $(abspath $(DEMO_DIR))/pipeline_run*."

# pytest exits 5 when it collected nothing: that must fail loudly, never pass.
# Each plugin runs as its own pytest session so that its own configuration applies.
test: venv
	$(XVFB) $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; rc=1; fi; \
	for p in $(PLUGINS); do \
	  $(PY) -m pytest $$p $(PYTEST_ARGS); prc=$$?; \
	  if [ $$prc -eq 5 ]; then echo "make test: no tests collected in $$p" >&2; prc=1; fi; \
	  if [ $$rc -eq 0 ]; then rc=$$prc; fi; \
	done; exit $$rc

bench: venv
	$(PY) benchmarks/run_io.py

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks plugins docs installer
	$(VENV)/bin/ruff format --check src tests benchmarks plugins docs installer
	$(VENV)/bin/lint-imports

# The documentation site (mkdocs.yml, docs/), built strictly: any warning fails. Output: site/.
SITE_DIR ?= site
docs: venv
	$(VENV)/bin/mkdocs build --strict --site-dir $(SITE_DIR)

# Retake the pictures of the GUI guide (docs/images/*.png) from the real app under Xvfb.
screenshots: venv
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) docs/screenshots.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache site
