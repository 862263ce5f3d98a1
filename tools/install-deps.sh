#!/usr/bin/env bash
# Installs what Tandem needs to build and test, from Debian's archive only. Idempotent: when
# every package is already installed it touches nothing (and needs no network). The list must be
# complete on a bare Debian 12 (apt's Recommends are not installed): tools/bare-root-check.sh,
# which tools/test.sh runs, proves it in a fresh minimal root.
#
#   build:  cmake ninja g++ pkg-config ccache        (ccache: rebuilds in CI and at home are fast)
#   libs:   hwloc (thread pinning), nlohmann-json (config.json, safetensors headers), CLI11 (tool
#           flags), Eigen and oneDNN (dense kernels, named by the design; its CMake config needs the OpenCL
#           headers, a Recommends that --no-install-recommends skips), GoogleTest, Google
#           Benchmark, PCRE2 (tokenizer regexes, Unicode-aware), utf8proc (Unicode
#           normalization for tokenizers), zlib (tandem-sim reads gzip-compressed routing traces),
#           cpp-httplib (tandem-server's HTTP)
#   fuzz:   clang with libFuzzer (tools/fuzz.sh)
#   python: the venv of tools/test.sh (python3-venv) and the headers that the `tandem` module
#           (python/, -DTANDEM_PYTHON=ON) compiles against (python3-dev)
#   browser: headless Chromium and its WebDriver, which the chat page's test drives (Selenium)
#   certificates: the configure step downloads xgrammar's source from PyPI over HTTPS
#           (engine/xgrammar.cmake; Debian has no package of it)
set -euo pipefail

packages=(
    cmake ninja-build g++ pkg-config ccache
    libhwloc-dev nlohmann-json3-dev libcli11-dev libeigen3-dev libdnnl-dev ocl-icd-opencl-dev
    libgtest-dev libbenchmark-dev libpcre2-dev libutf8proc-dev zlib1g-dev libcpp-httplib-dev
    clang libclang-rt-dev
    python3-venv python3-dev
    chromium chromium-driver
    ca-certificates
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
    exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
    sudo_cmd=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
