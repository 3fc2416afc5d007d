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

# The tests and the benchmark's model cases use torchvision's classifiers. torchvision is built
# for one torch release (torch 2.M pairs with torchvision 0.(M+15)), so pick that one.
if [ -n "$extras" ] && ! python -c "import torchvision" 2>/dev/null; then
  minor=$(python -c "import torch; print(torch.__version__.split('.')[1])")
  python -m pip install "torchvision==0.$((minor + 15)).*"
fi
