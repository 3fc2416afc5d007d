#!/usr/bin/env bash
# Installs medkern from this checkout into the current Python, with the extras named in $1
# (e.g. "test" or "bench"). torch is installed first if it is missing, since medkern compiles
# against the torch it runs with. MEDKERN_CUDA=0|1 and TORCH_CUDA_ARCH_LIST are passed on to
# the build (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

python -c "import torch" 2>/dev/null || python -m pip install "torch==2.14.1"
command -v ninja >/dev/null || python -m pip install ninja
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
python -m pip install --no-build-isolation -e ".${extras:+[$extras]}"
