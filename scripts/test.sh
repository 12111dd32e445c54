#!/usr/bin/env bash
# Runs the whole test suite: first the type check (mypy, configured in pyproject.toml) and the
# import-layer contract (tests/unit/test_layers.py), which fail fast; then unit tests, then
# integration and end-to-end tests on the local testbed (started by the tests' session fixture
# and stopped afterwards). Extra arguments go to the last pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m mypy
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_layers.py
exec .venv/bin/python -m pytest -ra "$@"
