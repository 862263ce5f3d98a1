#!/usr/bin/env bash
# Installs the build into a temporary prefix, as a user would, and checks what lands there:
# the binaries (each answers --version), engine/example built against it with
# find_package(tandem) and run on the tiny chat model, the same example built with nothing but
# `pkg-config --cflags --libs tandem` and run, and libtandem.so exporting only the API (every
# exported symbol is tandem's, none is nlohmann's or the standard library's). CTest runs this.
#   test_package.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 source=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" --component Unspecified > /dev/null
libdir=$(dirname "$(find "$prefix" -name 'libtandem.so' | head -1)")

for tool in tandem-run tandem-server tandem-tokenize tandem-synth; do
    [ -x "$prefix/bin/$tool" ] || { echo "FAIL: $prefix/bin/$tool not installed" >&2; exit 1; }
    "$prefix/bin/$tool" --version
done

# Every installed header compiles on its own, and every type it names is complete: a user can
# copy, construct or read each (sizeof of an incomplete type does not compile).
for header in "$prefix"/include/tandem/*.h; do
    printf '#include <tandem/%s>\n' "$(basename "$header")" |
        c++ -std=c++20 -fsyntax-only -I"$prefix/include" -x c++ - ||
        { echo "FAIL: <tandem/$(basename "$header")> does not compile alone" >&2; exit 1; }
done
printf '%s\n' '#include <tandem/engine.h>' \
    'static_assert(sizeof(tandem::ModelConfig) > 0 && sizeof(tandem::EngineConfig) > 0);' \
    'int64_t f(const tandem::Engine& e) { return e.model_config().n_layers; }' |
    c++ -std=c++20 -fsyntax-only -I"$prefix/include" -x c++ - ||
    { echo "FAIL: Engine::model_config() is not usable from the installed headers" >&2; exit 1; }

cmake -S "$source/engine/example" -B "$work/example" -G Ninja \
    -DCMAKE_PREFIX_PATH="$prefix" > /dev/null
cmake --build "$work/example" > /dev/null
out=$("$work/example/tandem-example" "$source/tests/data/chat_tiny" "Hello")
echo "$out"
# The model's shape, through Engine::model_config().
grep -q '^\[Qwen3MoeForCausalLM: 3 layers, hidden_dim 64,' <<<"$out" ||
    { echo "FAIL: the example printed no model_config()" >&2; exit 1; }

flags=$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs tandem)
echo "pkg-config --cflags --libs tandem: $flags"
# shellcheck disable=SC2086  # the flags are split on purpose
c++ "$source/engine/example/main.cpp" -o "$work/tandem-example-pc" $flags
LD_LIBRARY_PATH="$libdir" "$work/tandem-example-pc" "$source/tests/data/chat_tiny" "Hello"

exported=$(nm -D --defined-only -C "$libdir/libtandem.so" | cut -d' ' -f3-)
count=$(wc -l <<<"$exported")
foreign=$(grep -vE '^(tandem::|typeinfo for tandem::|typeinfo name for tandem::|vtable for tandem::)' \
    <<<"$exported" || true)
if [ -n "$foreign" ] || [ "$count" -gt 64 ]; then
    echo "FAIL: libtandem.so exports $count symbols; not the API's:" >&2
    echo "$foreign" | head -20 >&2
    exit 1
fi
echo "libtandem.so exports $count symbols, all of the API"
