#!/usr/bin/env bash
# The GPU half of the side-by-side benchmark in one go, for a machine lent for
# a few minutes (an H100 or H200 with jax and torch built for CUDA):
#
#   bash experiments/gpu_benchmark.sh OUT_DIR
#
# Writes OUT_DIR/benchmark_gpu.json (ours, ours in bfloat16 and the reference
# on the GPU, with each side's FLOP/s and its share of the card's datasheet
# peak) and OUT_DIR/benchmark_gpu.txt (the table), then OUT_DIR/seeds_gpu.json
# and .txt: what 8 seeds at once cost against one (--num_seeds, each
# --seeds_mode; experiments/seeds_benchmark.py). Wheels in .whl/ (e.g.
# ml_collections, where the machine lacks it) are installed first.
# BACKEND, TORCH_DEVICE, MODELS, REPEATS, SEEDS_MODELS and SEEDS_ITERS override
# the defaults (a CPU dry run: BACKEND=cpu TORCH_DEVICE=cpu MODELS=mlp REPEATS=1
# SEEDS_MODELS=digits_mlp SEEDS_ITERS=5,25).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/results}
mkdir -p "$out"
python=${PYTHON:-python3}
if compgen -G '.whl/*.whl' > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/wgan_site .whl/*.whl
  export PYTHONPATH=/tmp/wgan_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
backend=${BACKEND:-gpu}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$python" - "$backend" <<'EOF'
import sys, jax, torch
print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')
assert sys.argv[1] == 'cpu' or jax.default_backend() == sys.argv[1], jax.default_backend()
EOF
"$python" -m wgan_jax.benchmark --backend="$backend" --torch_device="${TORCH_DEVICE:-cuda}" \
    --models="${MODELS:-dcgan32,dcgan64,mlp}" --repeats="${REPEATS:-5}" --min_repeat_s=2 \
    --variant='ours_bf16: compute_dtype=bfloat16' \
    --out="$out/benchmark_gpu.json" | tee "$out/benchmark_gpu.txt"
"$python" experiments/seeds_benchmark.py --backend="$backend" --models="${SEEDS_MODELS:-dcgan32}" \
    --num_seeds=1,8 --seeds_modes=vmap,unroll,hybrid --iters="${SEEDS_ITERS:-20,420}" \
    --out="$out/seeds_gpu.json" | tee "$out/seeds_gpu.txt"
