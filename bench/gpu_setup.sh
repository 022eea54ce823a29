# Sourced by the GPU scripts: MLX CUDA and the worker's Python needs from a carried .gpu/ folder
# (site.tar.xz, wheels/, llguidance.tar.gz, the PTX cache), unpacked once per machine.
vlm_site() {  # mlx-vlm and Pillow, which the device lacks, for the vision steps (once)
  [ -n "${GPU_DRY:-}" ] || [ -f /tmp/site/.vlm ] || {
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels_vlm/*.whl && touch /tmp/site/.vlm; }
}
if [ -n "${GPU_DRY:-}" ]; then  # a dry run here, on the project's own environment
  PY=$PWD/.venv/bin/python; return 0
fi
PY=/opt/torch/.venv/bin/python3; SP=/opt/torch/.venv/lib/python3.12/site-packages
if [ ! -f /tmp/site/.ready ]; then
  mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && ln -sfn $SP/nvidia /tmp/site/nvidia
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl
  tar -xzf .gpu/llguidance.tar.gz -C /tmp/site
  mkdir -p /tmp/jit && tar -xJf .gpu/mlx_ptx_cache_sm90a.tar.xz -C /tmp/jit
  touch /tmp/site/.ready
fi
export PYTHONPATH=/tmp/site:$PWD MLX_PTX_CACHE_DIR=/tmp/jit/ptx PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=$(ls -d $SP/nvidia/*/lib | tr '\n' ':')${LD_LIBRARY_PATH:-}
