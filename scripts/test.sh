#!/usr/bin/env bash
# The README's test command: set up .venv, then lint, check formatting and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
