PY ?= .venv/bin/python

.PHONY: setup test unit demo testbed-up testbed-down testbed-status crds chart-crds dist bench lint

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

unit:
	$(PY) -m pytest -q tests/unit

demo:
	bash scripts/demo.sh

testbed-up:
	$(PY) -m testbed up

testbed-down:
	$(PY) -m testbed down

testbed-status:
	$(PY) -m testbed status

crds:
	$(PY) -m canary.crd

# the chart ships the CRDs generated from the models (tests/unit/test_chart.py checks they match)
chart-crds:
	cp crds/*.yaml charts/canary-operator/crds/

# dist/install.yaml: the chart rendered with its defaults, CRDs included, for kubectl apply
# (tests/unit/test_chart.py checks it is in sync)
dist: chart-crds
	$(PY) scripts/dist.py

bench:  # python -m bench --canaries 1000 (JSON in bench-results/operator.json)
	$(PY) -m bench $(BENCH_ARGS)
