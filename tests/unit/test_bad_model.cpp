// Bad model directories: each mistake gives a tandem::Error that names the file, tensor or
// parameter at fault, never a crash. Every case starts from a valid tiny checkpoint and breaks
// one thing.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

std::string load_error(const std::string& dir) {
    try {
        load_model(dir);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

nlohmann::json read_config(const test::TempDir& dir) {
    std::ifstream in(dir.path() / "config.json");
    return nlohmann::json::parse(in);
}

void write_config(const test::TempDir& dir, const nlohmann::json& config) {
    std::ofstream(dir.path() / "config.json") << config.dump();
}

// Rewrites model.safetensors with `edit` applied to the list of tensors.
template <class Edit>
void rewrite_weights(const test::TempDir& dir, Edit edit) {
    const std::string path = (dir.path() / "model.safetensors").string();
    std::vector<std::vector<std::byte>> storage;
    std::vector<SafetensorsWriteEntry> entries;
    {
        const SafetensorsFile file = SafetensorsFile::open(path);
        for (const auto& t : file.contents().tensors) {
            storage.emplace_back(t.data, t.data + (t.end - t.begin));
            entries.push_back({t.name, *t.dtype, t.shape, {}});
        }
    }
    for (size_t i = 0; i < entries.size(); ++i)
        entries[i].data = storage[i];
    edit(entries, storage);
    for (size_t i = 0; i < entries.size(); ++i)
        if (entries[i].data.empty()) entries[i].data = storage[i];
    write_safetensors(path, entries);
}

#define EXPECT_ERROR_HAS(message, fragment) \
    EXPECT_NE((message).find(fragment), std::string::npos) << "message: " << (message)

TEST(BadModel, ValidTinyModelLoads) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    EXPECT_EQ(load_error(dir.str()), "");
}

TEST(BadModel, MissingFiles) {
    test::TempDir dir;
    EXPECT_ERROR_HAS(load_error(dir.str() + "/nope"), "not a directory");
    EXPECT_ERROR_HAS(load_error(dir.str()), "config.json: cannot open");
    test::write_tiny_model(dir.str());
    fs::remove(dir.path() / "model.safetensors");
    EXPECT_ERROR_HAS(load_error(dir.str()), "no model.safetensors");
}

TEST(BadModel, TruncatedAndLyingSafetensors) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    const fs::path weights = dir.path() / "model.safetensors";
    fs::resize_file(weights, fs::file_size(weights) - 100);
    const std::string truncated = load_error(dir.str());
    EXPECT_ERROR_HAS(truncated, "model.safetensors: tensor ");
    EXPECT_ERROR_HAS(truncated, "run past");
    {
        std::fstream f(weights, std::ios::in | std::ios::out | std::ios::binary);
        const char huge[8] = {0, 0, 0, 0, 0, 0, 1, 0};  // header length 2^48
        f.write(huge, 8);
    }
    EXPECT_ERROR_HAS(load_error(dir.str()), "header length");
}

TEST(BadModel, UnknownArchitecture) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    auto config = read_config(dir);
    config["architectures"] = {"GPTNeoXForCausalLM"};
    write_config(dir, config);
    const std::string message = load_error(dir.str());
    EXPECT_ERROR_HAS(message, "unknown architecture 'GPTNeoXForCausalLM'");
    EXPECT_ERROR_HAS(message, "Qwen3MoeForCausalLM");  // lists what is supported
}

TEST(BadModel, MalformedConfig) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    std::ofstream(dir.path() / "config.json") << "{\"architectures\": [";
    EXPECT_ERROR_HAS(load_error(dir.str()), "config.json: not valid JSON");
    test::write_tiny_model(dir.str());
    auto config = read_config(dir);
    config["num_experts_per_tok"] = 9;
    write_config(dir, config);
    EXPECT_ERROR_HAS(load_error(dir.str()), "num_experts_per_tok 9 must be in [1, 4]");
}

TEST(BadModel, UnsupportedDtype) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    rewrite_weights(dir, [](auto& entries, auto&) {
        for (auto& e : entries)
            if (e.name == "model.norm.weight") e.dtype = DType::I32;  // same byte size as f32
    });
    const std::string message = load_error(dir.str());
    EXPECT_ERROR_HAS(message, "tensor model.norm.weight");
    EXPECT_ERROR_HAS(message, "unsupported dtype");
}

TEST(BadModel, ShapeMismatchNamesTensorExpectedAndFound) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    rewrite_weights(dir, [](auto& entries, auto&) {
        for (auto& e : entries)
            if (e.name == "model.layers.1.mlp.experts.3.down_proj.weight") e.shape = {16, 32};
    });
    EXPECT_ERROR_HAS(load_error(dir.str()),
                     "model.safetensors: tensor model.layers.1.mlp.experts.3.down_proj.weight: "
                     "expected [32, 16] f32, found [16, 32] f32");
}

TEST(BadModel, MissingTensor) {
    test::TempDir dir;
    test::write_tiny_model(dir.str());
    rewrite_weights(dir, [](auto& entries, auto& storage) {
        for (size_t i = 0; i < entries.size(); ++i)
            if (entries[i].name == "model.layers.0.self_attn.k_norm.weight") {
                entries.erase(entries.begin() + std::ptrdiff_t(i));
                storage.erase(storage.begin() + std::ptrdiff_t(i));
                break;
            }
    });
    EXPECT_ERROR_HAS(load_error(dir.str()),
                     "missing tensor model.layers.0.self_attn.k_norm.weight");
}

}  // namespace
}  // namespace tandem
