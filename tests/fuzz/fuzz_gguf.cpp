// Fuzz harness of the GGUF reader. Whatever the bytes, parse_gguf() must either return tensors
// that lie inside the file and metadata it can walk, or throw tandem::Error; never crash, hang,
// allocate without bound or read out of bounds. Built as a libFuzzer target with
// -DTANDEM_FUZZ=ON (clang; tools/fuzz.sh runs it), and linked into the unit tests, which drive it
// with mutated valid files.
#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/error.h"
#include "models/gguf.h"

namespace {

size_t walk(const tandem::GgufValue& v) {
    size_t n = v.str.size();
    for (const auto& e : v.array)
        n += walk(e);
    return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInputGguf(const uint8_t* data, size_t size) {
    const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
    try {
        const tandem::GgufContents contents = tandem::parse_gguf(file, "fuzz");
        volatile size_t total = 0;
        for (const auto& [key, value] : contents.metadata)
            total = total + walk(value);
        for (const auto& t : contents.tensors) {
            // Every accepted tensor lies within the file: touching its bytes must be safe.
            if (t.bytes > 0) {
                volatile std::byte first = t.data[0];
                volatile std::byte last = t.data[t.bytes - 1];
                (void)first;
                (void)last;
            }
        }
    } catch (const tandem::Error&) {
        // Rejected with a message: the expected outcome for most inputs.
    }
    return 0;
}

#ifdef TANDEM_LIBFUZZER_MAIN
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return LLVMFuzzerTestOneInputGguf(data, size);
}
#endif
