PY ?= .venv/bin/python

.PHONY: setup test unit demo testbed-up testbed-down testbed-status crds bench lint

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

bench:
	$(PY) -m bench
