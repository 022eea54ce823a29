#!/usr/bin/env bash
# The N-sessions run on a lent GPU machine: MLX CUDA from a carried
# .gpu/ folder (bench/gpu_setup.sh; tok/ for bench/gpu_models.py), a
# 30B-A3B-shaped MoE, then bench/concurrency.py with the arguments given. CARD_MIB=81559 on a
# bigger card holds the rest in another process, so the worker plans on an 80 GB card.
set -euo pipefail
source bench/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total --format=csv | tee $OUT/gpu.txt
[ -f /tmp/moe/config.json ] || $PY bench/gpu_models.py moe .gpu/tok /tmp/moe 2>&1 | tail -3
$PY -c "import mlx.core as mx; print(mx.device_info())" | tee -a $OUT/gpu.txt
if [ -n "${CARD_MIB:-}" ]; then  # leave the worker a card of CARD_MIB: another process holds the rest
  HOG=$(( $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1) - CARD_MIB ))
  $PY -c "import torch,time; x=torch.empty($HOG*2**20,dtype=torch.uint8,device='cuda'); print('holding',$HOG,'MiB',flush=True); time.sleep(7200)" &
  HOGPID=$!; sleep 20; nvidia-smi --query-gpu=memory.used,memory.total --format=csv | tee -a $OUT/gpu.txt
fi
( while sleep 2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader >> $OUT/mem.txt; done ) &
WATCH=$!
$PY bench/concurrency.py --model /tmp/moe "$@" --json $OUT/n8.json 2>&1 | tee $OUT/n8.txt || true
kill $WATCH; [ -n "${HOGPID:-}" ] && kill $HOGPID || true
sort -n $OUT/mem.txt | tail -1 > $OUT/mem_peak.txt
ls -t /tmp/*.log 2>/dev/null | head -3 | xargs -r -I{} cp {} $OUT/ || true
