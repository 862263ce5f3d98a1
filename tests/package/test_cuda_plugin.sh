#!/usr/bin/env bash
# The CUDA backend is a plugin (kernels/cuda_backend.h): in a CUDA build the core (libtandem.so,
# the tools) has no DT_NEEDED on the CUDA runtime, a CPU run loads neither the plugin nor CUDA, a
# cuda:N run finds the plugin (in the build tree and installed), and without the plugin a cuda:N
# run fails naming it. Skips (77) in a CPU-only build. CTest runs this.
#   test_cuda_plugin.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 source=$2
if ! grep -q 'kCudaCompiled = true' "$build/generated/kernels/build_config.h"; then
    echo "SKIP: a CPU-only build (TANDEM_CUDA off), which has no CUDA plugin"
    exit 77
fi
model=$source/tests/data/chat_tiny
plugin=$build/lib/libtandem_cuda.so.0
fail() { echo "FAIL: $*" >&2; exit 1; }
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

[ -f "$plugin" ] || fail "$plugin not built"
needed "$plugin" | grep -q '^libcudart' || fail "the plugin does not need libcudart: checking nothing"
for f in "$build/engine/libtandem.so" "$build/tools/tandem-run" "$build/tools/tandem-server"; do
    cuda=$(needed "$f" | grep -E '^lib(cudart|cublas|cuda)\.' || true)
    [ -z "$cuda" ] || fail "$f needs $cuda"
done
echo "libtandem.so, tandem-run, tandem-server: no DT_NEEDED on the CUDA libraries"

# A CPU run loads neither the plugin nor the CUDA runtime.
run=(--model "$model" --prompt-ids 1,2,3 --max-tokens 2 --temperature 0)
LD_DEBUG=files "$build/tools/tandem-run" "${run[@]}" > /dev/null 2> "$build/cuda_plugin_ld.log"
grep -q 'file=libdnnl' "$build/cuda_plugin_ld.log" || fail "LD_DEBUG shows no library loads"
if grep -E 'file=(libtandem_cuda|libcudart|libcublas)' "$build/cuda_plugin_ld.log"; then
    fail "a CPU run loaded the CUDA backend"
fi
echo "a CPU run loads no CUDA library"

# A cuda:N run: on a GPU machine it runs; elsewhere the plugin loads and says there is no device.
cuda_run() {  # cuda_run TANDEM_RUN: prints the output, never fails
    "$1" "${run[@]}" --device cuda:0 2>&1 || true
}
out=$(cuda_run "$build/tools/tandem-run")
if grep -q 'could not be loaded' <<<"$out"; then fail "build tree: $out"; fi
echo "build tree, --device cuda:0: $(tail -n 1 <<<"$out")"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" --component Unspecified > /dev/null
installed=$(find "$work/prefix" -name 'libtandem_cuda.so.0')
[ -n "$installed" ] || fail "libtandem_cuda.so.0 not installed"
out=$(cuda_run "$work/prefix/bin/tandem-run")
if grep -q 'could not be loaded' <<<"$out"; then fail "installed: $out"; fi
echo "installed, --device cuda:0: $(tail -n 1 <<<"$out")"
rm "$(dirname "$installed")"/libtandem_cuda.so*
out=$(cuda_run "$work/prefix/bin/tandem-run")
grep -q 'libtandem_cuda.so.0 could not be loaded' <<<"$out" || fail "without the plugin: $out"
echo "installed without the plugin: $out"
"$work/prefix/bin/tandem-run" "${run[@]}" > /dev/null || fail "a CPU run needs the plugin"
echo "installed without the plugin, a CPU run works"
