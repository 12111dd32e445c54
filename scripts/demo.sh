#!/usr/bin/env bash
# Sets up everything, starts the local testbed and runs the demo: a good release promoted and
# a bad one rolled back, with progress printed as it happens.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m testbed.demo "$@"
