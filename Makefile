# The README's commands. Each works on a fresh Debian machine: it makes .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: serve test test-fast lint bench system-deps node-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,lint]'
	rm -f $(VENV)/.installed-* && touch $@

serve: $(STAMP)
	$(VENV)/bin/signal-edge demo $(DEMO_ARGS)

# Debian packages, installed when missing: Chromium (Playwright cannot download browsers here),
# Caddy for the e2e tests, npm for the e2e accessibility check's axe-core, faketime (libfaketime:
# the cluster tests run nodes under a wrong clock), PostgreSQL's server, which the tests start in a
# temporary directory of their own (its binaries are not on PATH: /usr/lib/postgresql/*/bin), and
# systemd for `systemd-analyze verify` of deploy/signal-edge.service (it needs no running systemd).
SYSTEM_DEPS ?= chromium caddy npm faketime
system-deps:
	@missing=""; \
	for tool in $(SYSTEM_DEPS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# axe-core, which the e2e tests inject into each admin page (package.json; node_modules/ is not committed).
node-deps: system-deps
	test -f node_modules/axe-core/axe.min.js || npm ci --no-audit --no-fund --loglevel=error

# The whole suite, e2e included: every test but the timed ones over TEST_WORKERS processes (most
# tests wait on servers, browsers and the clock, so more workers than cores pays; four left the
# browser tests too little headroom), then the timed ones alone: their bounds on elapsed time or
# on the event loop's lag would measure a busy host.
TEST_WORKERS ?= 3
test: $(STAMP) system-deps node-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not timed"
	$(PY) -m pytest -q -m timed

# The fast tier: in process (ASGI apps through httpx, SQLite in memory or in a file, the contract
# suites on every backend), without a server process, a browser or a long scenario. Under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 tests -m "not process and not slow"

# ruff (style, likely bugs, imports) and mypy (types) over the product's code, as pyproject.toml
# configures them. Both always run, so one report lists every finding; any finding fails it.
lint: $(STAMP)
	@status=0; \
	echo "== ruff check collector delivery"; $(VENV)/bin/ruff check --output-format concise collector delivery || status=1; \
	echo "== mypy collector delivery"; $(VENV)/bin/mypy || status=1; \
	exit $$status

# Runs per benchmark figure; the median is reported (make bench RUNS=9 narrows it on a noisy host).
RUNS ?= 3
bench: $(STAMP)
	$(PY) bench/run_all.py --runs $(RUNS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis signal-edge-demo.db* signal-edge-demo.key signal-edge-demo.admin-token node_modules
