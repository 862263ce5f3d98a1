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

cmake -S "$source/engine/example" -B "$work/example" -G Ninja \
    -DCMAKE_PREFIX_PATH="$prefix" > /dev/null
cmake --build "$work/example" > /dev/null
"$work/example/tandem-example" "$source/tests/data/chat_tiny" "Hello"

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
