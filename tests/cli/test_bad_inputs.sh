#!/usr/bin/env bash
# The tools' answers to bad command lines, as a table: each row runs one tool and checks its exit
# status and that its output names the problem (and, where a wrong culprit was named before,
# that it no longer is). Then the environment variables the tools map to EngineConfig (and none
# read by the library), --version on every tool, and the same engine flags in the --help of
# tandem-run and tandem-server (one add_engine_flags).
#
#   tests/cli/test_bad_inputs.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
model="$src/models/demo/tandem-demo-moe"
failures=0

# tool | exit status ("nonzero": any but 0) | text the output must hold | text it must not hold
#      | stdin | arguments (split on spaces)
table=$(cat <<ROWS
run|1|n_threads: 1000 is above the cap||| --model $model --prompt-ids 1 --threads 1000
run|1|n_threads: -1 is negative||| --model $model --prompt-ids 1 --threads -1
run|nonzero|--planner requires --expert-device||| --model $model --prompt-ids 1 --planner hybrimoe
run|nonzero|--gpu-expert-ratio requires --expert-device||| --model $model --prompt-ids 1 --gpu-expert-ratio 0.5
run|nonzero|--prefetch requires --expert-device||| --model $model --prompt-ids 1 --prefetch off
run|nonzero|--cache-policy requires --expert-device||| --model $model --prompt-ids 1 --cache-policy lru
run|1|q8_0, q5_0, q4_0, q4_k, q5_k, q6_k||| --model $model --prompt-ids 1 --quantize q3_k
run|1|kv_cache_type: 'f8'||| --model $model --prompt-ids 1 --kv-cache-type f8
run|1|cpu_isa:||| --model $model --prompt-ids 1 --cpu-isa sse
run|1|device: 'sim': the model runs on cpu or cuda:N||| --model $model --prompt-ids 1 --device sim
run|1|expert_device: 'cpu'||| --model $model --prompt-ids 1 --expert-device cpu
run|1|tile_gemm: 'sometimes'||| --model $model --prompt-ids 1 --tile-gemm sometimes
run|1|max_sequences: 0 is not positive||| --model $model --prompt-ids 1 --max-sequences 0
run|1|kv_cache_bytes:||| --model $model --prompt-ids 1 --kv-cache-mb -1
run|1|replay_routing: '/nonexistent/trace.jsonl' does not exist||| --model $model --prompt-ids 1 --replay-routing /nonexistent/trace.jsonl
run|1|replay_predictor: 'psychic'||| --model $model --prompt-ids 1 --expert-device sim --replay-predictor psychic
run|1|EngineConfig: 3 bad fields||| --model $model --prompt-ids 1 --threads 1000 --quantize q3_k --kv-cache-type f8
run|1|model_dir: '/nonexistent/model' does not exist|tokenizer|| --model /nonexistent/model --prompt hello
run|nonzero|excludes||| --model $model --prompt-ids 1 --prompt hello
run|nonzero|excludes||| --model $model --prompt-ids 1 --random-prompt 4
run|0|decode:  0 tokens in 0.000 s|in -|| --model $model --prompt-ids 1,2 --max-tokens 0 --threads 1
server|1|n_threads: 1000 is above the cap|listening|| --threads 1000 --port 0
server|nonzero|--planner requires --expert-device|listening|| --planner static --port 0
tokenize|1|outside the vocabulary||[99999]| --tokenizer $model --decode
tokenize|0|The||[487]| --tokenizer $model --decode
ROWS
)

binary() {
    case $1 in
        run) echo "$build/tools/tandem-run" ;;
        server) echo "$build/tools/tandem-server" ;;
        tokenize) echo "$build/tools/tandem-tokenize" ;;
        synth) echo "$build/tools/tandem-synth" ;;
    esac
}

row=0
while IFS='|' read -r tool want_status want_text forbidden input args; do
    row=$((row + 1))
    # shellcheck disable=SC2086  # the arguments are split on purpose
    output=$(printf '%s' "$input" | timeout 60 "$(binary "$tool")" $args 2>&1)
    status=$?
    problem=""
    if [ "$want_status" = nonzero ]; then
        [ "$status" -ne 0 ] || problem="exit status 0, expected non-zero"
    elif [ "$status" -ne "$want_status" ]; then
        problem="exit status $status, expected $want_status"
    fi
    [ "$status" -ne 124 ] || problem="timed out after 60 s"
    grep -qF -- "$want_text" <<<"$output" || problem="${problem:+$problem; }output lacks '$want_text'"
    if [ -n "$forbidden" ] && grep -qF -- "$forbidden" <<<"$output"; then
        problem="${problem:+$problem; }output holds '$forbidden'"
    fi
    if [ -n "$problem" ]; then
        failures=$((failures + 1))
        printf 'FAIL row %d: tandem-%s%s: %s\n--- output:\n%s\n---\n' "$row" "$tool" "$args" \
            "$problem" "$output"
    else
        printf 'ok   row %d: tandem-%s%s\n' "$row" "$tool" "$args"
    fi
done <<<"$table"

# The tools map environment variables to EngineConfig fields (the library reads none); a flag
# wins over its variable.
check_env() {  # description, wanted status, wanted text, command...
    local what=$1 want_status=$2 want_text=$3
    shift 3
    local output status
    output=$(timeout 60 "$@" 2>&1)
    status=$?
    if [ "$status" -eq "$want_status" ] && grep -qF -- "$want_text" <<<"$output"; then
        echo "ok   $what"
    else
        failures=$((failures + 1))
        printf 'FAIL %s: exit status %d (expected %d), output lacks %s?\n--- output:\n%s\n---\n' \
            "$what" "$status" "$want_status" "'$want_text'" "$output"
    fi
}
check_env "TANDEM_TILE_GEMM=bogus is named as tile_gemm" 1 "tile_gemm: 'bogus'" \
    env TANDEM_TILE_GEMM=bogus "$build/tools/tandem-run" --model "$model" --prompt-ids 1
check_env "--tile-gemm wins over TANDEM_TILE_GEMM" 0 "finish:" \
    env TANDEM_TILE_GEMM=bogus "$build/tools/tandem-run" --model "$model" --prompt-ids 1 \
    --max-tokens 1 --threads 1 --tile-gemm never
library_getenv=$(grep -rnE '\b(secure_)?getenv\b|\benviron\b' "$src"/kernels "$src"/cache \
    "$src"/scheduler "$src"/models "$src"/engine --include='*.cpp' --include='*.h' \
    --include='*.cu' --include='*.inc')
if [ -z "$library_getenv" ]; then
    echo "ok   the library's sources read no environment variable"
else
    failures=$((failures + 1))
    printf 'FAIL the library reads the environment:\n%s\n' "$library_getenv"
fi

# tandem-synth shows its progress on a terminal (--progress forces it), and not in a pipe.
synth_dir=$(mktemp -d)
synth_args=(--layers 2 --hidden 64 --heads 2 --kv-heads 1 --head-dim 32 --experts 4 --top-k 2
    --expert-ffn 32 --vocab 64)
check_env "tandem-synth --progress shows each layer" 0 "layer 2/2" \
    "$build/tools/tandem-synth" --out "$synth_dir/a" "${synth_args[@]}" --progress
synth_piped=$("$build/tools/tandem-synth" --out "$synth_dir/b" "${synth_args[@]}" 2>&1)
if grep -q "layer 1/2" <<<"$synth_piped"; then
    failures=$((failures + 1))
    printf 'FAIL tandem-synth showed progress in a pipe:\n%s\n' "$synth_piped"
else
    echo "ok   tandem-synth shows no progress in a pipe"
fi
rm -rf "$synth_dir"

version=$(sed -n 's/^project(tandem VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
for tool in run server tokenize synth; do
    output=$("$(binary "$tool")" --version 2>&1)
    if [ $? -eq 0 ] && [ "$output" = "tandem-$tool $version" ]; then
        echo "ok   tandem-$tool --version: $output"
    else
        failures=$((failures + 1))
        echo "FAIL tandem-$tool --version: '$output', expected 'tandem-$tool $version'"
    fi
done

# The engine's flag groups (Engine, Hybrid CPU-GPU experts, NUMA) close both helps.
engine_flags() { "$(binary "$1")" --help | sed -n '/^Engine:/,$p' | grep -o -- '^  --[a-z-]*' | sort; }
run_flags=$(engine_flags run)
server_flags=$(engine_flags server)
if [ "$(wc -l <<<"$run_flags")" -ge 25 ] && [ "$run_flags" = "$server_flags" ]; then
    echo "ok   tandem-run and tandem-server --help: the same $(wc -l <<<"$run_flags") engine flags"
else
    failures=$((failures + 1))
    echo "FAIL engine flags differ between tandem-run and tandem-server --help:"
    diff <(echo "$run_flags") <(echo "$server_flags")
fi

# tandem-sim reports each configuration on stderr as it finishes, [k/N] in order, before the
# table; on a terminal a bar follows them, and a pipe gets no bar.
sim=("$build/tools/tandem-sim" --trace "$src/models/demo/routing-trace.jsonl.gz"
    --model tandem-demo-moe --profile a6000-xeon5220r-pcie3 --budget 0.25,0.5
    --cache mrs,lru --planner hybrimoe,static --prefetch off)
sim_err=$(timeout 120 "${sim[@]}" 2>&1 >/dev/null)
want="" k=0
for budget in 25 50; do
    for policy in mrs+hybrimoe lru+hybrimoe mrs+static lru+static; do
        k=$((k + 1))
        want+="[$k/8] budget $budget% $policy"$'\n'
    done
done
got=$(grep -o '\[[0-9]*/[0-9]*\] budget [0-9]*% [^:]*' <<<"$sim_err")
if [ "$got" = "${want%$'\n'}" ] && tail -n 1 <<<"$sim_err" | grep -q '8 runs in' &&
    ! grep -q 'configurations,' <<<"$sim_err"; then
    echo "ok   tandem-sim lists each of its 8 configurations as it finishes, without a bar in a pipe"
else
    failures=$((failures + 1))
    printf 'FAIL tandem-sim progress lines; wanted:\n%s--- stderr:\n%s\n---\n' "$want" "$sim_err"
fi
if command -v script > /dev/null; then
    tty_out=$(timeout 120 script -qec "$(printf '%q ' "${sim[@]}") > /dev/null" /dev/null)
    if grep -q '\] 7/8 configurations' <<<"$tty_out" && grep -q '\[8/8\] budget 50%' <<<"$tty_out"; then
        echo "ok   tandem-sim draws a bar on a terminal"
    else
        failures=$((failures + 1))
        printf 'FAIL tandem-sim on a terminal: no bar\n--- output:\n%s\n---\n' "$tty_out"
    fi
fi

# tandem-run draws the load's progress (EngineConfig.on_load_progress) on a terminal only.
run_q=("$build/tools/tandem-run" --model "$model" --prompt-ids 1 --max-tokens 1 --quantize q8_0
    --threads 2)
if ! timeout 120 "${run_q[@]}" 2>&1 >/dev/null | grep -q 'quantize \['; then
    echo "ok   tandem-run draws no load bar in a pipe"
else
    failures=$((failures + 1))
    echo "FAIL tandem-run drew a load bar into a pipe"
fi
if command -v script > /dev/null; then
    tty_out=$(timeout 120 script -qec "$(printf '%q ' "${run_q[@]}") > /dev/null" /dev/null)
    if grep -q 'tandem-run: quantize \[#*\] 100%' <<<"$tty_out"; then
        echo "ok   tandem-run draws the quantization's progress on a terminal, up to 100 %"
    else
        failures=$((failures + 1))
        printf 'FAIL tandem-run on a terminal: no load bar\n--- output:\n%s\n---\n' "$tty_out"
    fi
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
