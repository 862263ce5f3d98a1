#!/usr/bin/env bash
# Installs the build into a temporary prefix, builds engine/example against it with
# find_package(tandem), and runs the example on the tiny chat model. CTest runs this.
#   test_package.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 source=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" --component Unspecified > /dev/null
cmake -S "$source/engine/example" -B "$work/example" -G Ninja \
    -DCMAKE_PREFIX_PATH="$work/prefix" > /dev/null
cmake --build "$work/example" > /dev/null
"$work/example/tandem-example" "$source/tests/data/chat_tiny" "Hello"
