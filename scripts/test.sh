#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then integration and end-to-end tests on the local
# testbed (started by the tests' session fixture and stopped afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
