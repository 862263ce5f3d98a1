#!/usr/bin/env bash
# Installs the dependencies, checks that they are enough on a bare Debian 12 root, builds Tandem
# and runs the whole test suite: unit and golden tests in a release build, then the same tests
# built with ASan+UBSan and a ThreadSanitizer build. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)
# ccache keys on paths relative to the checkout, so clones and worktrees share the cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
tools/install-deps.sh

# install-deps.sh must be enough on a bare Debian 12: it and the configure step run in a fresh
# minimal root (tools/bare-root-check.sh; the root and the .debs are cached in
# /var/cache/tandem/debootstrap: ~4 minutes the first time, ~2 after).
timeout 1800 tools/bare-root-check.sh

# The server tests' Python side (the official openai client, pytest) and the Python bindings'
# (nanobind to build them, numpy for their tests and tools/posttrain's) and Selenium (the chat
# page's browser test) from PyPI, in a venv.
if [ ! -x .venv/bin/python ] ||
    ! .venv/bin/python -c "import openai, pytest, requests, numpy, nanobind, selenium, jsonschema" 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check openai pytest requests numpy nanobind \
        selenium jsonschema
fi
python=(-DPython3_EXECUTABLE="$PWD/.venv/bin/python")

# The release build also builds the `tandem` Python module and runs its tests (python/).
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_PYTHON=ON "${python[@]}"
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

# Sanitizers: the CPU code paths under AddressSanitizer and UndefinedBehaviorSanitizer.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_SANITIZE=ON \
    -DTANDEM_CUDA=OFF -DTANDEM_BUILD_BENCH=OFF "${python[@]}"
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$jobs"

# ThreadSanitizer: what runs threads against each other — the sim device's streams and events,
# the NUMA node pools, the engine's scheduler thread under concurrent submit/abort/stream/reload,
# and the hybrid executor (CPU pool, sim compute and copy streams at once).
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_TSAN=ON \
    -DTANDEM_CUDA=OFF -DTANDEM_BUILD_BENCH=OFF "${python[@]}"
cmake --build build-tsan -j "$jobs" --target test_sim_device test_engine test_hybrid_executor \
    test_numa test_structured_output test_kernels
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build-tsan/tests/test_sim_device
# (the NUMA node pools: leaders and per-node pools running at once, on synthetic topologies)
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build-tsan/tests/test_numa
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build-tsan/tests/test_engine
# (structured output: grammar masks computed on the GrammarWorker while the scheduler samples)
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build-tsan/tests/test_structured_output \
    --gtest_filter='EngineGrammar*'
# (a step's scratch arena: frames handed from thread to thread, and two at once refused)
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build-tsan/tests/test_kernels \
    --gtest_filter='ScratchArena.*:MoeExpertsScratch.*:EngineScratch.*'
# (the comparison with tandem-sim replays a long trace: its threads are those of the rest)
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build-tsan/tests/test_hybrid_executor \
    --gtest_filter=-HybridExecutorVsSim.*
