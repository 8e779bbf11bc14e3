#!/usr/bin/env bash
# One-command GPU check: training steps/s, 4K inference, bf16 vs float32 agreement (see README).
#   tools/gpu_check.sh [--out DIR] [--steps N]   # on one CUDA GPU, under 8 minutes
#   tools/gpu_check.sh --dry-run                 # on the CPU, tiny sizes, seconds
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3 || command -v python)"
exec "$py" "$root/tools/gpu_check.py" "$@"
