#!/usr/bin/env bash
# Set up everything, then lint, type-check and run the whole test suite (as root: it builds namespaces and loads XDP).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
