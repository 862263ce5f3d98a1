#!/usr/bin/env bash
# The GPU session's one script (about 10 minutes on an H200): builds Tandem for sm_90 with the
# CUDA backend, runs the GPU tests (CTest label `gpu`) and the unit tests, and prints a short
# table. The full log goes to $1, or $OUT/gpu_check.log when the device tool sets OUT.
#
#   tools/gpu_check.sh [LOG]
#
# What it verifies today: the CUDA device layer (memory, copies, streams, events); the hybrid
# comparison of issues #6 and #9 is prepared (it needs the CUDA expert kernels of issue #5). The
# CUDA kernels and whole-model GPU execution add their sections here as they land.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${1:-${OUT:-/tmp}/gpu_check.log}
mkdir -p "$(dirname "$log")"
jobs=$(nproc)
status=0

run() {  # run NAME COMMAND...: logs everything, remembers a failure, keeps going
    local name=$1
    shift
    echo "=== $name: $*" >> "$log"
    local start=$SECONDS
    if "$@" >> "$log" 2>&1; then
        results+=("| $name | ok | $((SECONDS - start)) s |")
    else
        results+=("| $name | FAILED | $((SECONDS - start)) s |")
        status=1
    fi
}

results=()
: > "$log"
run "nvidia-smi" nvidia-smi
run "configure (sm_90, CUDA on)" cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DTANDEM_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=90-real;90-virtual"
run "build" cmake --build build-gpu -j "$jobs"
run "GPU tests (-L gpu)" ctest --test-dir build-gpu -L gpu --output-on-failure
run "unit tests on this machine" ctest --test-dir build-gpu -L unit -j "$jobs" --output-on-failure

# The hybrid comparison (issues #6 and #9): a synthetic OLMoE-1B-7B-shaped model in Q4_K with the
# routing of the dev trace replayed, experts split between this machine's cores and the GPU at
# 25/50/75 % of the routed experts, hybrimoe against static. Until the CUDA expert kernels exist
# the executor refuses cuda:0 and this step fails saying so.
trace=../shared/traces/olmoe-decode-dev.jsonl.gz
if [[ -f $trace ]]; then
    run "hybrid: tandem-bench on cuda:0" build-gpu/bench/tandem-bench \
        -m synthetic:olmoe-1b-7b --layers 16 --quantize q4_k -p 512 -n 64 -r 3 \
        --gpu-expert-ratio 0,0.25,0.5,0.75 --planner hybrimoe,static --prefetch on \
        --expert-device cuda:0 --replay-routing "$trace" --json "${OUT:-/tmp}/hybrid.json" \
        --no-progress
    grep -E "^\| olmoe" "$log" | tail -n 7 | sed 's/^/    /' || true
fi

echo "| step | result | time |"
echo "|---|---|---|"
printf '%s\n' "${results[@]}"
grep -E "^\[ +(OK|FAILED|SKIPPED) +\] CudaDevice" "$log" | sed 's/^/    /' || true
echo "full log: $log"
exit $status
