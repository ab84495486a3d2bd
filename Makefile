# corral — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean docs check-spawn lab lab-down quick

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A master on 127.0.0.1 with three local clients n1 n2 n3; the clients stop with the prompt.
run: $(STAMP)
	$(PY) -m master.demo $(ARGS)

# A master and three clients (or --hosts N) in network namespaces joined by a bridge, each
# with its own address and host name, and the console (root; see docs/lab.md).
lab: $(STAMP)
	$(PY) -m master.lab $(ARGS)

lab-down: $(STAMP)
	$(PY) -m master.lab --down $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The quick loop while working: everything but the slow tests, four at a time.
quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 4 $(PYTEST_ARGS)

# The spawn tests against client/spawn.py's spawn_student (yours to write), in this process
# and through a real client started with --spawn student. Each failure says what to fix.
check-spawn: $(STAMP)
	CORRAL_SPAWN_METHODS=student $(PY) -m pytest -q --tb=line --show-capture=no -p no:cacheprovider \
		tests/test_spawn_contract.py tests/test_spawn.py tests/test_clean_children.py

lint: $(STAMP)
	$(VENV)/bin/ruff check master client common tests bench
	$(VENV)/bin/mypy

# Every benchmark, then bench/results/REPORT.md with the figures, the machine and charts
# (matplotlib, the optional `bench` extra). ARGS="--quick" for small sizes.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]' || echo "no matplotlib: the report will have no charts"
	$(PY) bench/report.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The message reference in docs/protocol.md, written from the code's registry, and the
# console command reference in README.md, written from the commands' parsers.
docs: $(STAMP)
	$(PY) -c "from common.spec import update; update('docs/protocol.md')"
	$(PY) -c "from master.reference import update; update('README.md')"
