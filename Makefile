# Two commands for a fresh machine:
#   make demo   - makes .venv, installs the project, runs `dsl apply recipes/quickstart.dsl`
#   make test   - makes .venv, installs the project with test tools, runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build this project is tested with (pip takes it from the local cache/index)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/dsl apply recipes/quickstart.dsl; status=$$?; \
	echo ""; \
	echo "The dsl command is in $(BIN): run 'source $(BIN)/activate' (or call $(BIN)/dsl) to use the commands above,"; \
	echo "e.g. dsl status recipes/quickstart.dsl"; \
	exit $$status

browser:  # Debian's chromium + chromium-driver for tests/test_ui.py: installed when missing and running as root
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (apt-get)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: chromium/chromedriver missing and not root: tests/test_ui.py will be skipped"; fi; \
	fi

# one pytest worker per core (at most 4), each training with one thread; a test file runs on one worker, so its
# module fixtures are built once. Tests marked `alone` then run by themselves: they train the quickstart with the
# demo's two threads and compare its figures with the README's (a thread count changes a float summation order),
# or time a race that a busy machine skews (40 clients leaving before their answer: each must be cancelled).
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST  := HF_HUB_OFFLINE=1 HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python -m pytest -q -p no:cacheprovider

test: $(STAMP) browser
	$(PYTEST) -n $(WORKERS) --dist loadfile -m "not alone"
	$(PYTEST) -m alone

test-fast: $(STAMP)
	$(PYTEST) -n $(WORKERS) --dist loadfile -m "not slow and not alone"

bench: $(STAMP)
	for b in tests/benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) recipes/.dsl .pytest_cache
