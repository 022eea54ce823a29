#!/usr/bin/env bash
# The N-sessions run on a lent GPU machine: MLX CUDA from a carried
# .gpu/ folder (site.tar.xz, wheels, llguidance.tar.gz, tok/, make_moe.py, the PTX cache), a
# 30B-A3B-shaped MoE, then bench/concurrency.py with the arguments given. CARD_MIB=81559 on a
# bigger card holds the rest in another process, so the worker plans on an 80 GB card.
set -euo pipefail
PY=/opt/torch/.venv/bin/python3; SP=/opt/torch/.venv/lib/python3.12/site-packages
mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && ln -sfn $SP/nvidia /tmp/site/nvidia
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl
tar -xzf .gpu/llguidance.tar.gz -C /tmp/site
mkdir -p /tmp/jit && tar -xJf .gpu/mlx_ptx_cache_sm90a.tar.xz -C /tmp/jit
export PYTHONPATH=/tmp/site:$PWD MLX_PTX_CACHE_DIR=/tmp/jit/ptx PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=$(ls -d $SP/nvidia/*/lib | tr '\n' ':')${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee $OUT/gpu.txt
[ -d /tmp/moe ] || $PY .gpu/make_moe.py .gpu/tok /tmp/moe 2>&1 | tail -3
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
