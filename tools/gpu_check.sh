#!/usr/bin/env bash
# The one script a session lent a GPU runs first (device time is ~15 minutes in all, start-up
# included, so this finishes in <= 8 minutes). It runs what tools/gpu_prepare.sh built and packed
# on the development machine — the GPU tests (every CUDA kernel against its CPU twin), then the CUDA
# kernel benchmarks with the HBM copy bandwidth measured in the same run — and prints one table.
# Logs, JSON and the benchmark tables go to $OUT (the device tool's folder that comes back) or
# /tmp/gpu_check.
#
#   here:   tools/gpu_prepare.sh                        # build for sm_90, pack build-gpu-bundle/
#   device: tools/gpu_check.sh                          # run with carry: ["build-gpu-bundle"]
#
# Without a bundle it configures and builds from source first (the GPU machine's image lacks
# oneDNN, utf8proc and cpp-httplib, so there that fails; a machine with tools/install-deps.sh run
# builds fine). The device tool sends the working tree too (64 MiB with the bundle): the 45 MB demo
# model does not fit beside it, so a session keeps it out of what travels for the call, e.g.
#   git rm -q --cached models/demo/tandem-demo-moe/model.safetensors
#   echo /models/demo/tandem-demo-moe/model.safetensors >> .git/info/exclude
# and afterwards `git reset -q HEAD -- models/demo/tandem-demo-moe/model.safetensors` and the
# exclude line removed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
log=${1:-$out/gpu_check.log}
: > "$log"
status=0
results=()

step() {  # step NAME SECONDS COMMAND...: logs everything, bounds the time, remembers a failure
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*" >> "$log"
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1 || rc=$?
    local verdict=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        verdict="TIMED OUT (${limit} s)"
    elif [ $rc -ne 0 ]; then
        verdict="FAILED (exit $rc)"
    fi
    [ "$verdict" = ok ] || status=1
    results+=("| $name | $verdict | $((SECONDS - start)) s |")
}

run_dir=build-gpu-run
if [ -f build-gpu-bundle/bundle.tar.xz ]; then
    rm -rf "$run_dir" && mkdir -p "$run_dir"
    step "unpack the carried bundle" 60 tar -C "$run_dir" -xJf build-gpu-bundle/bundle.tar.xz
    echo "bundle built from commit $(cat "$run_dir/COMMIT" 2>/dev/null)" | tee -a "$log"
    if [ -s "$run_dir/DIRTY" ]; then echo "  with uncommitted changes:" | tee -a "$log"; sed 's/^/    /' "$run_dir/DIRTY" | tee -a "$log"; fi
else
    step "configure (sm_90, CUDA on)" 120 cmake -S . -B build-gpu -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real
    step "build" 420 cmake --build build-gpu -j "$(nproc)"
    mkdir -p "$run_dir/bin" "$run_dir/lib" "$run_dir/data"
    find build-gpu/tests build-gpu/bench build-gpu/tools -maxdepth 1 -type f -perm -u+x \
        \( -name 'test_cuda_*' -o -name 'tandem-*' \) -exec cp {} "$run_dir/bin/" \; 2>/dev/null
fi
export LD_LIBRARY_PATH="$PWD/$run_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=$run_dir/bin

step "nvidia-smi" 30 nvidia-smi

# Every GPU test binary: the CUDA kernels against their CPU twins on fresh random inputs.
tests=("$bin"/test_cuda_*)
if [ ! -e "${tests[0]}" ]; then
    results+=("| GPU tests | FAILED (no test_cuda_* binary) | 0 s |")
    status=1
    tests=()
fi
for t in "${tests[@]}"; do
    step "$(basename "$t")" 120 "$t" --gtest_color=no
done

# Benchmarks: each prints a markdown table (kept in $out) and JSON lines.
if [ -x "$bin/tandem-cuda-bench" ]; then
    step "tandem-cuda-bench" 120 bash -c "'$bin/tandem-cuda-bench' --json '$out/cuda_bench.json' \
        | tee '$out/cuda_bench.md'"
fi
if [ -x "$bin/tandem-cuda-attention-bench" ]; then
    step "tandem-cuda-attention-bench" 90 bash -c "'$bin/tandem-cuda-attention-bench' \
        --json '$out/attention_bench.json' | tee '$out/attention_bench.md'"
fi

# The whole model on the GPU (EngineConfig.device = cuda:0): synthetic OLMoE-1B-7B and
# Qwen3-30B-A3B shapes, every weight resident, against the device copy bandwidth measured in the
# same run. Real depths (the H200 writes a synthetic checkpoint at several GB/s): Qwen3-30B-A3B in
# Q4_K is 17 GB of weights on the GPU.
if [ -x "$bin/tandem-bench" ]; then
    mkdir -p "$out/tb"
    bench_gpu() {  # bench_gpu NAME ARGS...
        local name=$1
        shift
        step "tandem-bench $name" 120 "$bin/tandem-bench" --device cuda:0 -p 512 -n 128 -r 3 \
            --kv-cache-type bf16 \
            --no-progress --model-cache /tmp/gpu-check-models --json "$out/tb/$name.json" "$@"
        rm -rf /tmp/gpu-check-models  # up to 17 GB each, on a 64 GB disk
    }
    bench_gpu olmoe-q4_k -m synthetic:olmoe-1b-7b --quantize q4_k
    bench_gpu olmoe-bf16 -m synthetic:olmoe-1b-7b
    # The same two with decode steps replayed from CUDA graphs (--cuda-graphs), side by side.
    bench_gpu olmoe-q4_k-graphs -m synthetic:olmoe-1b-7b --quantize q4_k --cuda-graphs
    bench_gpu olmoe-bf16-graphs -m synthetic:olmoe-1b-7b --cuda-graphs
    bench_gpu qwen3-30b-a3b-q4_k -m synthetic:qwen3-30b-a3b --quantize q4_k
    # The hybrid split (issue 19): the model on cuda:0, its routed experts in host memory, placed
    # per layer by the executor between the CPU and the GPU's expert cache, with the dev trace's
    # routing replayed; hybrimoe against kTransformers-style static placement in the same run.
    trace=$run_dir/data/olmoe-decode-dev.jsonl.gz
    if [ -f "$trace" ]; then
        step "tandem-bench olmoe-q4_k-hybrid" 240 "$bin/tandem-bench" --device cuda:0 \
            --expert-device cuda:0 -m synthetic:olmoe-1b-7b --quantize q4_k -p 512 -n 64 -r 2 \
            --gpu-expert-ratio 0.25,0.5 --planner hybrimoe,ktransformers-static \
            --replay-routing "$trace" --kv-cache-type bf16 --no-progress \
            --model-cache /tmp/gpu-check-models --json "$out/tb/olmoe-q4_k-hybrid.json"
        # The same hybrid decode with its steps replayed from CUDA graphs (the plan, the CPU's
        # experts and the copy lists from host functions), against the eager run above.
        step "tandem-bench olmoe-q4_k-hybrid-graphs" 180 "$bin/tandem-bench" --device cuda:0 \
            --expert-device cuda:0 -m synthetic:olmoe-1b-7b --quantize q4_k -p 512 -n 64 -r 2 \
            --gpu-expert-ratio 0.25 --planner hybrimoe --cuda-graphs \
            --replay-routing "$trace" --kv-cache-type bf16 --no-progress \
            --model-cache /tmp/gpu-check-models --json "$out/tb/olmoe-q4_k-hybrid-graphs.json"
        rm -rf /tmp/gpu-check-models
    fi
    cat "$out"/tb/*.json > "$out/tandem_bench.json" 2>/dev/null
    rm -rf "$out/tb"
fi

echo
echo "GPU check $(date -u +%Y-%m-%dT%H:%MZ), $(nvidia-smi --query-gpu=name,driver_version \
    --format=csv,noheader 2>/dev/null)"
echo "| step | result | time |"
echo "|---|---|---|"
printf '%s\n' "${results[@]}"
passed=$(grep -c '^\[       OK \]' "$log")
failed=$(grep '^\[  FAILED  \]' "$log" | grep -vc 'listed below\|tests, listed')
skipped=$(grep -c '^\[  SKIPPED \]' "$log")
echo "gtest cases: $passed passed, $failed failed, $skipped skipped"
grep '^\[  FAILED  \] [A-Za-z]' "$log" | sort -u | head -n 40 | sed 's/^/    /'
for md in "$out"/cuda_bench.md "$out"/attention_bench.md; do
    [ -f "$md" ] && { echo; grep '^|' "$md"; }
done
echo
grep -h '^| [a-z]' "$log" | grep -E 'cuda:0|^\| model' | sort -u | head -n 12
echo "full log: $log"
exit $status
