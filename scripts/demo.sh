#!/usr/bin/env bash
# The README's first command: create or reuse .venv, install mmadapter (and espeak-ng when run as root on a
# Debian/Ubuntu machine), then run the offline demo. Arguments go to `mmadapter demo` (--out DIR, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. .venv/bin/activate
exec mmadapter demo "$@"
