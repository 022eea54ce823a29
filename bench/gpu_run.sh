#!/usr/bin/env bash
# Benches on a lent GPU machine, step by step: bash bench/gpu_run.sh STEP [STEP...]
#   moe | dense | dense8 | small   build the random-weight shape (bench/gpu_models.py) once
#                          (GPU_DRY=1 MODEL_ARGS=--tiny: a dry run here on 2-layer models)
#   spec-moe | spec-dense  bench/speculative.py on it (turns from .gpu/turns.json: no git there)
#   verify-SHAPE           bench/verify_cost.py: a verify forward's cost against a plain step
#   pipeline-SHAPE         bench/verify_pipeline.py: verify cycles one after the other vs pipelined
#   n8                     bench/concurrency.py, 8 sessions of ~21K tokens on the MoE
#   restart                bench/agentic.py, ours only: restart and kill -9 to first token
#                          (on /tmp/$RESTART_MODEL, default moe)
#   models                 bench/models.py: the small shape's requests while the MoE streams
#   door                   bench/front_door.py on the MoE: the front door's cost, no switches
#   vlm                    a tiny Qwen3-VL language side under Qwen3-VL-8B's vision tower (27
#                          layers of 1152), random weights: mlx-vlm's wheels from .gpu/wheels_vlm
#   vision                 bench/vision.py on it (VISION_ARGS, default --sessions 4)
# Each step has its own time limit (STEP_S, default 300; STEP_S_spec_moe etc. for one step) so
# one slow step leaves the rest a turn;
# it ends on SIGINT, so a bench stops the service it started before it exits.
set -uo pipefail
source bench/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a $OUT/gpu.txt
( while sleep 2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader >> $OUT/mem.txt; done ) &
WATCH=$!
for step in "$@"; do
  echo "== $(date +%T) $step" | tee -a $OUT/steps.txt
  own_limit="STEP_S_${step//-/_}"; LIMIT=${!own_limit:-${STEP_S:-300}}
  case $step in
    moe|dense|dense8|small) [ -f /tmp/$step/config.json ] || timeout -s INT -k 30 $LIMIT $PY bench/gpu_models.py $step .gpu/tok /tmp/$step ${MODEL_ARGS:-} 2>&1 | tail -2 | tee -a $OUT/build.txt ;;
    spec-*) timeout -s INT -k 30 $LIMIT $PY bench/speculative.py --model /tmp/${step#spec-} --turns-file .gpu/turns.json ${SPEC_ARGS:---per-kind 2 --repeats 1 --max-tokens 768 --sessions 8} 2>&1 | tee $OUT/$step.txt
            cp /tmp/spec-bench-*/spec-*.log $OUT/ 2>/dev/null; rm -rf /tmp/spec-bench-* ;;
    verify-*) timeout -s INT -k 30 $LIMIT $PY bench/verify_cost.py /tmp/${step#verify-} 2>&1 | grep -v Warning | tee $OUT/$step.txt ;;
    pipeline-*) timeout -s INT -k 30 $LIMIT $PY bench/verify_pipeline.py /tmp/${step#pipeline-} 2>&1 | grep -v Warning | tee $OUT/$step.txt ;;
    n8) timeout -s INT -k 30 $LIMIT $PY bench/concurrency.py --model /tmp/moe --sessions 8 --servers ours --json $OUT/n8.json 2>&1 | tee $OUT/n8.txt ;;
    models) timeout -s INT -k 30 $LIMIT $PY bench/models.py --big /tmp/moe --small /tmp/small --runs 8 --starts 2 --max-tokens 1500 2>&1 | tee $OUT/models.txt ;;
    vlm) vlm_site; [ -f /tmp/vlm/config.json ] || timeout -s INT -k 30 $LIMIT $PY -m server.testing.tiny_vlm /tmp/vlm --family qwen3_vl --real-tower 2>&1 | tail -3 | tee -a $OUT/build.txt ;;
    vision) vlm_site; timeout -s INT -k 30 $LIMIT $PY bench/vision.py --model /tmp/vlm ${VISION_ARGS:---sessions 4} 2>&1 | tee $OUT/vision.txt ;;
    door) timeout -s INT -k 30 $LIMIT $PY bench/front_door.py --model /tmp/moe ${DOOR_ARGS:---no-switches --runs 20 --http h11} 2>&1 | tee $OUT/door.txt ;;
    restart) timeout -s INT -k 30 $LIMIT $PY bench/agentic.py --model /tmp/${RESTART_MODEL:-moe} --servers ours --turns 3 --keep-logs 2>&1 | tee $OUT/restart.txt ;;
  esac
  echo "== $(date +%T) $step done rc=$?" | tee -a $OUT/steps.txt
done
[ -d /tmp/jit/ptx ] && tar -cJf $OUT/mlx_ptx_cache_sm90a.tar.xz -C /tmp/jit ptx  # kernels compiled here
kill $WATCH; sort -n $OUT/mem.txt | tail -1 > $OUT/mem_peak.txt
