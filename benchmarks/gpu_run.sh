#!/usr/bin/env bash
# The GPU benchmarks as one script, for a lent CUDA machine whose python3 has torch (see README,
# "Benchmarks"). Wheels of the other dependencies travel in .whl/ (a stub rasterio in .whl/stub: segment
# does not vectorise). Figures go to stdout and, one log per step, to $OUT (default ./gpu-results).
set -u -o pipefail
status=0
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/.whl/stub:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
# STEPS="lanes_check model ..." runs only those steps (default: all; their limits add up to more than one
# 10-minute device call: split them over two calls when the budget is short)
step() {
  local name=$1 limit=$2; shift 2
  case " ${STEPS:-all} " in *" all "*|*" $name "*) ;; *) return 0 ;; esac
  echo "== $name"; timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || { echo "== $name failed"; status=1; }
}
step lanes_check 90 python3 benchmarks/check_cuda_lanes.py --batch 16 --tiles 256
step model 100 python3 benchmarks/bench_model.py --device cuda --precision bf16 --batch 32 --repeats 5 \
  --presets sam_path_vit_b,sam_vit_b_only,hipt_only
step compiled 150 python3 benchmarks/bench_model.py --device cuda --precision bf16 --batch 32 --repeats 5 \
  --presets sam_path_vit_b --compile
step segment 190 python3 benchmarks/bench_segment.py --sections b --device cuda --precision bf16 \
  --real-preset sam_path_vit_b --real-input-size 1024 --real-mpp 0.25 --real-tiles 1536 --real-repeats 1 \
  --size 20000 --small-size 20000 --batch-size 32 --read-workers 12 --cache-dir /tmp/wsiseg-bench
step lanes 190 python3 benchmarks/bench_segment.py --sections b --device cuda --precision bf16 \
  --real-preset sam_path_vit_b --real-input-size 1024 --real-mpp 0.25 --real-tiles 1536 --real-repeats 1 \
  --size 20000 --small-size 20000 --batch-size 32 --read-workers 12 --cache-dir /tmp/wsiseg-bench --lanes 2
step profile 60 python3 benchmarks/profile_model.py --preset sam_path_vit_b --batch 16
step encoders 300 python3 benchmarks/bench_encoders.py --device cuda --skip-cpu-time --batches 1,8,32 \
  --repeats 2 --json "$OUT/encoders.json"
exit $status
