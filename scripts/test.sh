#!/usr/bin/env bash
# Installs medkern with its test dependencies, then runs the whole test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
python -m pytest "$@"
