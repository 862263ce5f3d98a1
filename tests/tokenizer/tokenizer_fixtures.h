// Shared helpers of the tokenizer tests: the real tokenizer folders in ../shared/tokenizers
// (skipped with a message when absent), the demo model's tokenizer committed in
// models/demo/tandem-demo-moe (never skipped), and the fixtures in tests/data/tokenizer/.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "models/tokenizer/tokenizer.h"
#include "tests/test_util.h"

namespace tandem::test {

inline std::string tokenizer_dir(const std::string& name) {
    if (name == "demo") return data_dir() + "/../../models/demo/tandem-demo-moe";
    return shared_dir() + "/tokenizers/" + name;
}

// Loads the tokenizer once per process; nullptr when its folder is absent.
inline const Tokenizer* shared_tokenizer(const std::string& name) {
    static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
    auto& slot = loaded[name];
    if (!slot && std::filesystem::exists(tokenizer_dir(name) + "/tokenizer.json"))
        slot = std::make_unique<Tokenizer>(Tokenizer::load(tokenizer_dir(name)));
    return slot.get();
}

#define TANDEM_REQUIRE_TOKENIZER(var, name)                                                   \
    const ::tandem::Tokenizer* var = ::tandem::test::shared_tokenizer(name);                  \
    if (!var)                                                                                 \
    GTEST_SKIP() << ::tandem::test::tokenizer_dir(name)                                       \
                 << " not found: the real tokenizer files live in ../shared/tokenizers next " \
                    "to the repository"

inline nlohmann::ordered_json read_fixture(const std::string& name, const std::string& file) {
    const std::string path = data_dir() + "/tokenizer/" + name + "/" + file;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open");
    std::stringstream buffer;
    buffer << in.rdbuf();
    return nlohmann::ordered_json::parse(buffer.str());
}

// The text with control and non-ASCII bytes escaped, for failure messages.
inline std::string printable(const std::string& s) {
    std::string out;
    for (const char c : s) {
        const auto u = (unsigned char)c;
        if (u >= 0x20 && u < 0x7f) {
            out += c;
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", u);
            out += buf;
        }
    }
    return out;
}

}  // namespace tandem::test
