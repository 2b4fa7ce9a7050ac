#!/usr/bin/env bash
# The CUDA checks, as one script for a lent GPU machine (run from the repository root):
# the cuda-marked tests, then the CUDA benchmarks beside their CPU twins, then a short
# paper-default meta-training on the GPU. Logs land in $OUT (default: cuda_check_out/).
#
# The GPU machine has its own Python and torch (not this repo's .venv) and no registry access:
# the pure-Python dependencies it lacks travel as wheels in .whl/ (see docs/cuda.md for the
# download command). MuJoCo Warp is not checked here: warp-lang's wheel (149 MB) is larger
# than what can travel to that machine.
set -uo pipefail
OUT=${OUT:-cuda_check_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else '-')"
    nproc
} 2>&1 | tee "$OUT/machine.txt"

echo "== cuda-marked tests"
timeout 200 python3 -m pytest -q -m cuda -p no:cacheprovider \
    tests/test_envs.py tests/test_rl.py tests/test_zero_order.py \
    tests/test_zero_order_compile.py tests/test_resume.py 2>&1 | tee "$OUT/cuda_tests.log"

echo "== torch.compile tests, CPU and CUDA, under this machine's torch"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_zero_order_compile.py 2>&1 \
    | tail -n 30 | tee "$OUT/compile_tests.log"

echo "== batched envs: CUDA vs CPU"
for device in cuda cpu; do
    timeout 60 python3 benchmarks/batched_envs.py --device "$device" --repeats 3 2>&1 \
        | tee "$OUT/bench_envs_$device.log"
done

echo "== one paper-default ES-MAML iteration: CUDA vs CPU (16 threads)"
timeout 90 python3 benchmarks/es_maml_iteration.py --device cuda --repeats 5 2>&1 \
    | tee "$OUT/bench_iteration_cuda.log"
timeout 60 python3 benchmarks/es_maml_iteration.py --device cpu --threads 16 --repeats 3 2>&1 \
    | tee "$OUT/bench_iteration_cpu.log"

echo "== configs/nav2d_es.yaml, 60 iterations: CUDA vs CPU (wall seconds on the last line)"
for device in cuda cpu; do
    start=$SECONDS
    timeout 90 python3 -m esmaml.cli train configs/nav2d_es.yaml device=$device iterations=60 \
        evaluation.every=30 checkpoint.every=30 progress=false --run-dir /tmp/nav2d_$device 2>&1 \
        | tail -n 12 | tee "$OUT/train_nav2d_$device.log"
    echo "wall $((SECONDS - start)) s" | tee -a "$OUT/train_nav2d_$device.log"
done
exit 0
