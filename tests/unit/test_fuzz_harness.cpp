// Drives the fuzz harness (tests/fuzz/fuzz_safetensors.cpp) from the unit tests with random
// mutations of a valid file, so every CI run, and the ASan+UBSan build, exercises the parser on
// hostile input even without libFuzzer.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/test_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<uint8_t> valid_file() {
    const std::string header =
        R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
        R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}})";
    std::vector<uint8_t> file(8 + header.size() + 22, 0x11);
    for (int i = 0; i < 8; ++i)
        file[size_t(i)] = uint8_t((header.size() >> (8 * i)) & 0xff);
    std::copy(header.begin(), header.end(), file.begin() + 8);
    return file;
}

TEST(FuzzHarness, SurvivesRandomMutations) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const std::vector<uint8_t> base = valid_file();
    const std::string alphabet = "{}[]\":,0123456789-eE.FBI6841_ \\u\xff";
    for (int round = 0; round < 20000; ++round) {
        std::vector<uint8_t> file = base;
        const int edits = 1 + int(rng() % 6);
        for (int e = 0; e < edits; ++e) {
            switch (rng() % 4) {
                case 0:  // overwrite a byte with a JSON-ish character
                    file[rng() % file.size()] = uint8_t(alphabet[rng() % alphabet.size()]);
                    break;
                case 1:  // random byte
                    file[rng() % file.size()] = uint8_t(rng());
                    break;
                case 2:  // truncate
                    file.resize(rng() % (file.size() + 1));
                    break;
                default:  // insert
                    file.insert(file.begin() + std::ptrdiff_t(rng() % (file.size() + 1)),
                                uint8_t(alphabet[rng() % alphabet.size()]));
            }
            if (file.empty()) break;
        }
        LLVMFuzzerTestOneInput(file.data(), file.size());
    }
    LLVMFuzzerTestOneInput(base.data(), base.size());
}

}  // namespace
