#!/usr/bin/env bash
# Create or reuse .venv and install mmadapter with everything its tests need. Safe to run repeatedly:
# the install is skipped while pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "mmadapter needs Python >= 3.10 (set PYTHON=/path/to/python3)" >&2
  exit 1
fi

# System packages, with apt-get where this user may run it (root, or password-less sudo).
as_root=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root="none"; fi
fi
apt_install() {  # package: install it with apt-get when permitted; fails otherwise
  command -v apt-get >/dev/null && [ "$as_root" != none ] || return 1
  $as_root apt-get update -qq && $as_root apt-get install -y -qq "$1" >/dev/null
}
# libsndfile decodes audio (soundfile ships its own copy on most platforms; this is the fallback where it
# does not).
ldconfig -p 2>/dev/null | grep -q libsndfile || apt_install libsndfile1 || true
# espeak-ng speaks the offline demo's synthetic speech (mmadapter/data/synthetic.py).
command -v espeak-ng >/dev/null || apt_install espeak-ng ||
  echo "note: espeak-ng is not installed (needs apt-get as root or with sudo): the demo speaks its digits with the copy the espeakng-loader wheel bundles" >&2

[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=.venv/.mmadapter-install-stamp
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # The torch family first, pinned to builds known to install together (see pyproject.toml).
  python -m pip install -q torch==2.14.1 torchvision==0.29.1
  python -m pip install -q --no-deps torchaudio==2.11.0
  python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
