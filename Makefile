# The README's commands. `make demo` and `make test` do all set-up on a fresh machine.
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
LOCK     := constraints.txt
LOCKVENV := .lock-venv
# pytest workers: two by default (CI's 2 cores); `make test JOBS=auto` uses every core, `JOBS=0` runs in-process.
JOBS     ?= 2

.PHONY: setup test demo bench lint lock clean

setup: $(STAMP)

# Installs exactly the tested versions in $(LOCK) (pip constraints: pins for whatever pyproject.toml pulls in).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -c $(LOCK) --upgrade pip
	$(PY) -m pip install -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

# Whole suite, slow tests included, in $(JOBS) worker processes; a test module stays on one worker (its
# module-scoped fixtures are built once).
test: setup
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile --durations=25

demo: setup
	$(VENV)/bin/xbench demo

bench: setup
	$(PY) benchmarks/run_all.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

# Upgrades $(LOCK): resolves pyproject.toml afresh (newest allowed releases) in a scratch venv and freezes it.
# Then run `make test` and commit $(LOCK) with whatever the new versions change (golden files included).
lock:
	rm -rf $(LOCKVENV)
	python3 -m venv $(LOCKVENV)
	$(LOCKVENV)/bin/python -m pip install -q --upgrade pip
	$(LOCKVENV)/bin/python -m pip install -q -e '.[dev]'
	{ printf '%s\n' \
	  "# Tested versions of every package \`make setup\` installs (the project itself excluded), used as pip" \
	  "# constraints: \`pip install -c constraints.txt -e '.[dev]'\`. Upgrade with \`make lock\` (fresh resolve of" \
	  "# pyproject.toml in a scratch venv), run \`make test\`, and commit this file together with any golden changes."; \
	  echo "# Generated on $$(date -u +%F) with Python $$($(LOCKVENV)/bin/python -c 'import platform; print(platform.python_version())') on $$(uname -m) $$(uname -s)."; \
	  $(LOCKVENV)/bin/python -m pip freeze --all --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCKVENV)
	@echo "$(LOCK) upgraded: run 'make test' (set-up reinstalls from it), then commit it"

clean:
	rm -rf runs .pytest_cache
