#!/usr/bin/env bash
# One-shot GPU check: CUDA tests, loss/encoder benchmarks, and a few hundred paper-preset pretraining steps.
# Usage: OUT=dir bash benchmarks/gpu_check.sh   (run from the repository root on a CUDA machine)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-gpu_check_out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_loss.py 2>&1 | tail -4 | tee "$OUT/tests.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/tests.txt"
import torch
from examples.skeleton.data.augment import pretrain_view
x = torch.randn(64, 3, 300, 25, 2, device="cuda"); n = torch.randint(20, 300, (64,), device="cuda")
a = pretrain_view(x, n, generator=torch.Generator("cuda").manual_seed(0))
b = pretrain_view(x, n, generator=torch.Generator("cuda").manual_seed(0))
print("augment on cuda:", tuple(a.shape), "reproducible:", torch.equal(a, b), "finite:", bool(torch.isfinite(a).all()))
PY
timeout 40 python3 benchmarks/bench_loss.py --device cuda --min-run-time 0.3 2>&1 | tee "$OUT/bench_loss.txt"
timeout 60 python3 -m benchmarks.bench_encoder --device cuda --amp none bf16 --repeats 5 --throughput-steps 20 2>&1 | tee "$OUT/bench_encoder.txt"
start=$(date +%s)
timeout 100 python3 examples/skeleton_moco.py pretrain --recipe released --dataset synthetic --device cuda \
    --pretrain-epochs 10 --halp-start-epoch 2 --max-steps 200 --num-workers 4 --out "$OUT/paper_run" 2>&1 | tail -15 | tee "$OUT/pretrain.txt"
echo "pretrain wall: $(( $(date +%s) - start )) s" | tee -a "$OUT/pretrain.txt"
find "$OUT/paper_run" -name "*.csv" -exec cp {} "$OUT/" \; 2>/dev/null
rm -rf "$OUT/paper_run"
