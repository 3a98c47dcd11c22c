#!/usr/bin/env bash
# Issue 21's GPU checks in one run, for a machine with a CUDA GPU (none could be had for the issue: see
# docs/PERFORMANCE.md). From the repository root, in a venv with ddpmkit[test] and diffusers:
#
#     bash bench/gpu_check.sh 2>&1 | tee bench/out/gpu_check.log        # about 10-15 minutes on one H100
#
# 1. the GPU's name, compute capability, and what `precision = "auto"` picks there and why;
# 2. the tests that run on CUDA when it is present (the precision decision on the real device, a bf16 training
#    step and every sampler under bf16 on the GPU) and the CPU-side precision tests;
# 3. bench/throughput.py on the GPU: the paper's cifar10 network at batch 128, ours by default (auto), fp32, bf16 and
#    bf16 + torch.compile, against diffusers' train_unconditional recipe in fp32 and under bf16 autocast, in
#    alternating fresh processes: training img/s, sampling network evaluations/s and torch's peak allocation.
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p bench/out
python - <<'PY'
import torch
from ddpmkit.precision import decide
assert torch.cuda.is_available(), "no CUDA device: this script is for a machine with a GPU"
print("GPU:", torch.cuda.get_device_name(0), "compute capability", torch.cuda.get_device_capability(0),
      "torch", torch.__version__, "CUDA", torch.version.cuda)
print(decide("auto", "cuda").describe())
PY
python -m pytest -q -rs tests/test_precision.py tests/samplers/test_bf16.py tests/train/test_precision_training.py \
    tests/train/test_memory.py tests/train/test_fast_paths.py
python bench/throughput.py --device cuda --models cifar10 --batch 128 --variants default,fp32,bf16,bf16_compile \
    --peers fp32,bf16 --rounds 3 --iters 5 --warmup 3 --sample-steps 20 --threads 8 --no-parts \
    --json bench/out/gpu_throughput.json
