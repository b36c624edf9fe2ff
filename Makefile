# `make test` and `make demo` set up .venv themselves. The stamp file makes a
# second run skip all install work until requirements.txt or pyproject.toml change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCHATTACKS := torchattacks==3.5.1

.PHONY: install fashion-mnist browser test test-fast lint demo ui bench clean

RUN_DIR ?= runs
UI_PORT ?= 5000

install: $(STAMP) fashion-mnist

$(STAMP): requirements.txt pyproject.toml
	@echo "setting up $(VENV) (first run: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# --no-compile: pip compiles one file at a time; compileall below uses every core
	$(PY) -m pip install -q --disable-pip-version-check --no-compile -r requirements.txt
	@# torchattacks pins requests~=2.25.1, which MLflow and Ray reject: install it
	@# without its metadata's dependencies; its real needs are in requirements.txt.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $(TORCHATTACKS)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@# Then every installed module compiled once, on all cores (~30 s on 2; pip's own compile is serial). Without
	@# it the suite's fresh processes (Ray nodes and workers, servers, CLIs) each compile what they import, often
	@# the same modules at once: ~2.5 min more of a fresh clone's make test. A file that does not compile is
	@# skipped here and compiled (or not) at import, as before.
	@echo "compiling the installed modules"
	@$(PY) -m compileall -q -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	@touch $(STAMP)

# Everything: lint, then every test (the slow ones start Ray, MLflow servers, Chromium), in one process.
# TEST_WORKERS=N runs them on N pytest-xdist workers (tests/xdist_units.py: the Ray tests one at a time on one
# worker, first). Not the default: on this 2-core machine two workers were slower than one (34 min against
# 26.5, the CPUs 92% busy against 76%: the Ray tests ran up to 2.5x slower beside the other worker).
TEST_WORKERS ?= 0
test: lint browser fashion-mnist
	$(PY) -m pytest -n $(TEST_WORKERS) --no-loadscope-reorder

# The fast tier (under 2 minutes): every test not marked slow. A test is slow by its own marker
# (docs/contributing.md): the sweeps, servers, browser, installs and long trainings are.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

# Debian's dataset-fashion-mnist (the four IDX files, ~31 MB, in $(FASHION_MNIST)): the default folder of
# --dataset fashion_mnist. Installed here when missing and this is root on Debian; never fails the build.
FASHION_MNIST := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@test -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz || test "$$PSREVAL_SKIP_FASHION_MNIST" = 1 || \
	  { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && echo "installing dataset-fashion-mnist (apt-get)" && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1 || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null; }; }; } || \
	  echo "note: Fashion-MNIST is not in $(FASHION_MNIST) and cannot be installed here; as root on Debian/Ubuntu: apt-get install dataset-fashion-mnist, or pass --data-root DIR holding its four IDX files (its real-data test is skipped)"

# Debian's chromium, which the MLflow UI test drives headless: installed here when missing
# and this is root on Debian, never inside a test (PSREVAL_SKIP_BROWSER=1 skips that test).
browser:
	@test -x /usr/bin/chromium || test "$$PSREVAL_SKIP_BROWSER" = 1 || \
	  { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && echo "installing chromium (apt-get)" && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	  echo "note: /usr/bin/chromium is missing and cannot be installed here; the MLflow UI test will fail (PSREVAL_SKIP_BROWSER=1 skips it)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A small Optuna search on digits on a local Ray (a few minutes on 2 cores).
demo: $(STAMP)
	$(VENV)/bin/psreval grid demo --name demo-$$(date +%Y%m%d-%H%M%S) --max-concurrent 2 --run-dir $(RUN_DIR)
	@echo
	@echo "Open the trials: make ui (it prints the address of the runs table, http://127.0.0.1:$(UI_PORT)/...)."
	@echo "One cycle without Ray: $(VENV)/bin/psreval run --dataset digits --epsilon 3.4 --out runs/cycle"

# The MLflow UI over the default local store, on loopback only.
ui: $(STAMP)
	$(VENV)/bin/psreval ui --run-dir $(RUN_DIR) --port $(UI_PORT)

# Hot-path benchmarks (DP-SGD modes, attack loops, cycle phases): tables on stdout,
# JSON in benchmarks/results/ (~10 min on 2 idle cores). See benchmarks/README.md.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
