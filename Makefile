# The two commands a user needs on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
# make test: pytest-xdist workers (2: one per core of the CI machine) and the AOTInductor compile cache they share
# (git-ignored, reused by later runs).
TEST_WORKERS ?= 2
TEST_CACHE ?= $(CURDIR)/.cache/inductor

.PHONY: install demo test bench clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)

# pip byte-compiles what it installs one file at a time (about 35 s for torch and its kin on 2 cores);
# compileall does the same on every core, so the first imports stay fast. Like pip, it goes on past files written
# for a newer Python (torch ships one), hence `|| true`.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt -r requirements-dev.txt
	$(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") > /dev/null || true
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

demo: install
	sh scripts/demo.sh

test: install
	@echo "==> lint"
	$(PY) -m ruff check .
	@echo "==> tests"
	OMP_NUM_THREADS=1 TORCHINDUCTOR_CACHE_DIR=$(TEST_CACHE) \
	  $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 tests

bench: install
	$(PY) benchmarks/bench_rle.py
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_tiling.py
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_qc.py

clean-demo:
	rm -rf data/phantom data/phantom_failures runs/demo_stage1 runs/demo_stage2 outputs/demo trt_models/demo*
