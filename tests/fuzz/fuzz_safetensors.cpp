// Fuzz harness of the safetensors parser. Whatever the bytes, parse_safetensors() must either
// return entries that lie inside the file or throw tandem::Error; never crash, hang or read out
// of bounds. Built as a libFuzzer target with -DTANDEM_FUZZ=ON (clang; tools/fuzz.sh runs it),
// and linked into the unit tests, which drive it with mutated valid files.
#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/error.h"
#include "models/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
    try {
        const tandem::SafetensorsContents contents = tandem::parse_safetensors(file, "fuzz");
        for (const auto& t : contents.tensors) {
            // Every accepted tensor lies within the file: touching its bytes must be safe.
            if (t.end > t.begin) {
                volatile std::byte first = t.data[0];
                volatile std::byte last = t.data[t.end - t.begin - 1];
                (void)first;
                (void)last;
            }
        }
    } catch (const tandem::Error&) {
        // Rejected with a message: the expected outcome for most inputs.
    }
    return 0;
}
