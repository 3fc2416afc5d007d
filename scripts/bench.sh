#!/usr/bin/env bash
# Installs medkern, then runs the benchmark suite on the default device (arguments go to
# `medkern bench`, e.g. --quick, --filter bias_act, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh bench
medkern bench "$@"
