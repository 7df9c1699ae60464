#!/usr/bin/env bash
# Issue 15's GPU figures in one run, on a fresh GPU machine without the internet (torch preinstalled):
#   1. the machine, Python, torch, CUDA;
#   2. the modules avemo imports that are missing (av and decord on this workplace's GPU machines), installed
#      from .whl/ (no index), then avemo itself (pip install --no-deps -e .);
#   3. tools/gpu_checks.py: the stacked LSTM's recurrence and --stacked (--deterministic) checked on the GPU;
#   4. `avemo bench step`: a profiled step of stacked training (wall, operators, kernels, GPU busy per step);
#   5. Table 1 × seeds trained stacked (avemo.train.stacked), MediaEval size (goal: ≤ 60 s on one H100);
#   6. extraction: a sample corpus, tools/gpu_decode_probe.py (could NVDEC decode?), `avemo extract` with
#      fine-tuning (phase times), `avemo bench extract`
#      (both use cuda when torch sees a GPU);
#   7. with ONE_CLIPS > 0: Table 1 one by one, 1 epoch (a per-epoch figure: 1.19 s on an H100 before).
# Run from the repository root: bash tools/gpu_bench.sh (OUT, PY, WHEELS, DEVICE and the sizes below from the
# environment). Every step runs under `timeout` and writes $OUT/<step>.log; the timeouts add up to under 10 min.
#
# Fill .whl/ beforehand where pip can reach PyPI, for the GPU machine's Python (3.12 there):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2010_x86_64 -d .whl av==18.1.0 decord==0.6.0
set -u
cd "$(dirname "$0")/.."

# -- sizes and limits (seconds; each may be set in the environment): the timeouts add up to 540 s (590 with torchvision to install; one-by-one off) --
PY=${PY:-python3}
OUT=${OUT:-gpu-bench-out}
WHEELS=${WHEELS:-.whl}
DEVICE=${DEVICE:-cuda}
STACKED_CLIPS=${STACKED_CLIPS:-10900} STACKED_SEEDS=${STACKED_SEEDS:-5} STACKED_EPOCHS=${STACKED_EPOCHS:-40}
STACKED_TIMEOUT=${STACKED_TIMEOUT:-140}
STEP_CLIPS=${STEP_CLIPS:-2000} STEP_TIMEOUT=${STEP_TIMEOUT:-50} CHECKS_TIMEOUT=${CHECKS_TIMEOUT:-45}
ONE_CLIPS=${ONE_CLIPS:-0} ONE_SEEDS=${ONE_SEEDS:-1} ONE_EPOCHS=${ONE_EPOCHS:-1} ONE_TIMEOUT=${ONE_TIMEOUT:-45}
EXTRACT_CLIPS=${EXTRACT_CLIPS:-160} EXTRACT_TIMEOUT=${EXTRACT_TIMEOUT:-70} PROBE_TIMEOUT=${PROBE_TIMEOUT:-45}
SAMPLE_SIZE=${SAMPLE_SIZE:-640x360}  # frames of the sample clips: decoding time grows with the size (the demo's 160x120 flatters)
INSTALL_TIMEOUT=${INSTALL_TIMEOUT:-50}
# module → package, for what avemo imports besides torch
MODULES="click:click tqdm:tqdm h5py:h5py numpy:numpy scipy:scipy PIL:pillow av:av decord:decord matplotlib:matplotlib"

mkdir -p "$OUT"
started=$(date +%s)
step() {  # step NAME TIMEOUT COMMAND...: run it, its output shown and kept in $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (timeout ${limit} s): $*"
    local t0=$(date +%s)
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$OUT/summary.txt"
}

# 1. the machine
{
    nvidia-smi -L
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    nproc
} 2>&1 | tee "$OUT/machine.log"

# 2. what is missing, from wheels/ only
missing=""
for pair in $MODULES; do
    $PY -c "import ${pair%%:*}" 2>/dev/null || missing="$missing ${pair##*:}"
done
echo "missing:${missing:- none}" | tee "$OUT/install.log"
if [ -n "$missing" ]; then
    step install "$INSTALL_TIMEOUT" $PY -m pip install --no-index --find-links "$WHEELS" $missing
fi
if ! $PY -c "import torchvision" 2>/dev/null && ls "$WHEELS"/torchvision-*.whl >/dev/null 2>&1; then
    step install-torchvision "$INSTALL_TIMEOUT" $PY -m pip install --no-index --no-deps --find-links "$WHEELS" torchvision
fi
step install-avemo "$INSTALL_TIMEOUT" $PY -m pip install --no-deps --no-build-isolation -e .
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this tree's avemo even where the install failed

# GPU use every 2 s while the benchmarks run
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 >"$OUT/gpu-use.csv" 2>&1 &
monitor=$!

# 3. correctness first: the stacked LSTM's recurrence and --stacked against one by one, with --deterministic
step gpu-checks "$CHECKS_TIMEOUT" $PY tools/gpu_checks.py "$DEVICE"

# 4. where a stacked step's time goes (the next optimisation follows from it: CUDA graphs if the GPU idles)
step bench-step "$STEP_TIMEOUT" $PY -c 'from avemo.cli import main; main()' bench step --clips "$STEP_CLIPS" --seeds "$STACKED_SEEDS" --device "$DEVICE"

# 5. stacked: the issue's goal
step table-stacked "$STACKED_TIMEOUT" $PY -c 'from avemo.cli import main; main()' bench table --stacked \
    --clips "$STACKED_CLIPS" --seeds "$STACKED_SEEDS" --epochs "$STACKED_EPOCHS" --device "$DEVICE"

# 6. extraction: a sample corpus, the whole `avemo extract` with fine-tuning (phase times in its log), then
# `avemo bench extract` on the same clips (decode only, forward only, pipeline; cuda when torch sees a GPU)
CORPUS=$(mktemp -d)
step sample "$EXTRACT_TIMEOUT" $PY -c 'from avemo.cli import main; main()' sample "$CORPUS/sample" --clips "$EXTRACT_CLIPS" --size "$SAMPLE_SIZE"
step decode-probe "$PROBE_TIMEOUT" $PY tools/gpu_decode_probe.py "$CORPUS/sample/clips.csv"
step extract-finetune "$EXTRACT_TIMEOUT" $PY -c 'from avemo.cli import main; main()' extract \
    --manifest "$CORPUS/sample/clips.csv" --cache "$CORPUS/cache" --weights none
step bench-extract "$EXTRACT_TIMEOUT" $PY -c 'from avemo.cli import main; main()' bench extract --manifest "$CORPUS/sample/clips.csv" --device "$DEVICE"
cp "$CORPUS/cache/log.txt" "$OUT/extract-log.txt" 2>/dev/null

# 7. one by one, small: seconds per epoch of one head
if [ "$ONE_CLIPS" -gt 0 ]; then
    step table-one-by-one "$ONE_TIMEOUT" $PY -c 'from avemo.cli import main; main()' bench table \
        --clips "$ONE_CLIPS" --seeds "$ONE_SEEDS" --epochs "$ONE_EPOCHS" --device "$DEVICE"
fi

kill "$monitor" 2>/dev/null
echo "total: $(($(date +%s) - started)) s" | tee -a "$OUT/summary.txt"
grep -h "^PASS\|^FAIL\|GPU\|decode,\|Table 1\|ratio\|per epoch\|per step\|decode\|forward\|fine-tune\|fc7\|pool5" "$OUT"/*.log | tee -a "$OUT/summary.txt"
