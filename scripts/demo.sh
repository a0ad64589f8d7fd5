#!/usr/bin/env bash
# Set up everything, then run the lab demo of the tutorial's cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pyvs lab demo "$@"
