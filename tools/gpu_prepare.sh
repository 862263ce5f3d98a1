#!/usr/bin/env bash
# Builds, on the development machine (nvcc needs no GPU), everything a GPU session runs, and packs
# it into one compressed bundle that the device tool carries to the lent GPU machine, so that device
# time goes to running, not compiling. tools/gpu_check.sh unpacks and runs it there.
#
#   tools/gpu_prepare.sh            # -> build-gpu/ (sm_90) and build-gpu-bundle/bundle.tar.xz
#
# The bundle holds the GPU tests (CTest label gpu), the CUDA benchmarks, tandem-bench, tandem-run
# and tandem-server, stripped, the CUDA plugin libtandem_cuda.so.0 that the core of the tools loads
# with dlopen for --device cuda:N (kernels/cuda_backend.h; found through gpu_check.sh's
# LD_LIBRARY_PATH), plus the shared libraries from Debian's archive that the GPU
# machine's image (Ubuntu 24.04 with CUDA 13) lacks (oneDNN, utf8proc, cpp-httplib, ...). It also
# holds the dev routing trace when ../shared has it (the GPU machine receives only the repository).
# Size: the device tool sends the working tree plus carried paths, 64 MiB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
build=build-gpu
bundle_dir=build-gpu-bundle

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90-real > /dev/null
# Every GPU test target, and the tools the script runs, where this tree has them.
mapfile -t gpu_tests < <(sed -n 's/^tandem_gpu_test(\([a-z_0-9]*\).*/\1/p' tests/CMakeLists.txt)
targets=(test_cuda_device "${gpu_tests[@]}" tandem_cuda)
available=$(ninja -C "$build" -t targets all | sed -n 's/^\([A-Za-z0-9_-]*\): phony$/\1/p')
for t in tandem-cuda-bench tandem-cuda-attention-bench tandem-bench tandem-run tandem-server; do
    if grep -qx "$t" <<< "$available"; then targets+=("$t"); fi
done
echo "gpu_prepare: building ${targets[*]}"
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/data"
plugin=$build/lib/libtandem_cuda.so.0
[ -f "$plugin" ] || { echo "gpu_prepare: no CUDA plugin $plugin" >&2; exit 1; }
cp -L "$plugin" "$stage/lib/"
strip --strip-unneeded "$stage/lib/libtandem_cuda.so.0"
for t in "${targets[@]}"; do
    [ "$t" = tandem_cuda ] && continue
    path=$(find "$build" -type f -name "$t" -perm -u+x | head -n 1)
    [ -n "$path" ] || { echo "gpu_prepare: no binary for $t" >&2; exit 1; }
    cp "$path" "$stage/bin/"
    strip "$stage/bin/$t"
done
# Shared libraries outside the C/C++ runtime and CUDA (which the GPU machine has, newer).
for lib in $(ldd "$stage"/bin/* "$stage/lib/libtandem_cuda.so.0" 2>/dev/null | awk '/=> \//{print $3}' | sort -u); do
    case $(basename "$lib") in
        libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libgcc_s.so* | \
            libstdc++.so* | libgomp.so* | libcud* | libcublas* | libz.so* | libudev.so*) ;;
        *) cp -L "$lib" "$stage/lib/" ;;
    esac
done
trace=../shared/traces/olmoe-decode-dev.jsonl.gz
[ -f "$trace" ] && cp "$trace" "$stage/data/"
git rev-parse HEAD > "$stage/COMMIT"
git status --short > "$stage/DIRTY"

mkdir -p "$bundle_dir"
tar -C "$stage" -cf - . | xz -T0 -6 > "$bundle_dir/bundle.tar.xz"
ls -la "$bundle_dir/bundle.tar.xz"
echo "gpu_prepare: libraries bundled: $(ls "$stage/lib" | tr '\n' ' ')"
