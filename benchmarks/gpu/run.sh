#!/usr/bin/env bash
# GPU check of the real-savings issue: the scale bench's DiT-XL/2 call on CUDA (fp32, bf16, fp16,
# ViDiT-Q W8A8 through torch._int_mm). Not part of CI; run it only on a machine with a CUDA GPU:
#   bash benchmarks/gpu/run.sh            (writes benchmarks/results/gpu/scale_gpu.{json,md})
# Installs effigy with --no-deps where torch is already present (the GPU machine's own CUDA build),
# so that no CPU wheel replaces it. At most ~8 minutes on a current data-centre GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" 
python3 -m pip install --quiet --no-deps -e . diffusers==0.42.1 safetensors==0.8.0 typer==0.29.1 rich==15.0.0 \
  2>/dev/null || true
timeout 480 python3 benchmarks/gpu/scale_gpu.py --device cuda --tokens 256,1024,4096 --out benchmarks/results/gpu
