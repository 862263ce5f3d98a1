// The GGUF reader on valid files of every metadata type and version, and on bad files: each kind
// of corruption gets a clear error naming the key or tensor, never a crash (this suite also runs
// under ASan+UBSan). The fuzz harness is driven with random mutations of a valid file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "kernels/error.h"
#include "models/gguf.h"
#include "models/gguf_loader.h"
#include "models/model.h"
#include "tests/gguf_writer.h"
#include "tests/test_util.h"

extern "C" int LLVMFuzzerTestOneInputGguf(const uint8_t* data, size_t size);

namespace tandem {
namespace {

using test::GgufWriter;

template <class T>
std::vector<uint8_t> le(T v) {
    std::vector<uint8_t> b(sizeof(T));
    std::memcpy(b.data(), &v, sizeof(T));
    return b;
}

std::vector<uint8_t> f32_data(size_t n) {
    std::vector<uint8_t> b(n * 4);
    for (size_t i = 0; i < n; ++i) {
        const float v = float(i) + 0.5f;
        std::memcpy(b.data() + 4 * i, &v, 4);
    }
    return b;
}

// A file with one key of every value type, a nested array, an f32 and a q8_0 tensor.
GgufWriter valid_writer(uint32_t version = 3) {
    GgufWriter w(version);
    w.add_string("general.architecture", "llama");
    w.add("u8", 0, {200});
    w.add("i8", 1, le<int8_t>(-5));
    w.add("u16", 2, le<uint16_t>(60000));
    w.add("i16", 3, le<int16_t>(-30000));
    w.add_u32("u32", 4000000000u);
    w.add("i32", 5, le<int32_t>(-7));
    w.add_f32("f32", 0.25f);
    w.add_bool("bool", true);
    w.add("u64", 10, le<uint64_t>(1ull << 40));
    w.add("i64", 11, le<int64_t>(-(1ll << 40)));
    w.add("f64", 12, le<double>(1e-300));
    w.add_string_array("strings", {"a", "", "ccc"});
    // [[1, 2], []]: an array of arrays of i32.
    std::vector<uint8_t> nested = le<uint32_t>(9);
    auto append = [&](const std::vector<uint8_t>& b) {
        nested.insert(nested.end(), b.begin(), b.end());
    };
    append(w.count_bytes(2));
    append(le<uint32_t>(5));
    append(w.count_bytes(2));
    append(le<int32_t>(1));
    append(le<int32_t>(2));
    append(le<uint32_t>(5));
    append(w.count_bytes(0));
    w.add("nested", 9, nested);
    w.add_tensor("a.weight", 0, {3, 2}, f32_data(6));
    w.add_tensor("q.weight", 8, {32, 2}, std::vector<uint8_t>(68, 0x11));
    return w;
}

std::span<const std::byte> as_bytes(const std::vector<uint8_t>& b) {
    return {reinterpret_cast<const std::byte*>(b.data()), b.size()};
}

std::string parse_error(const std::vector<uint8_t>& file) {
    try {
        parse_gguf(as_bytes(file), "t.gguf");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

#define EXPECT_ERROR_HAS(message, part) \
    EXPECT_NE((message).find(part), std::string::npos) << "message: '" << (message) << "'"

// Position of the first occurrence of `text` in the file.
size_t find(const std::vector<uint8_t>& file, const std::string& text) {
    auto it = std::search(file.begin(), file.end(), text.begin(), text.end());
    if (it == file.end()) throw std::runtime_error("not found: " + text);
    return size_t(it - file.begin());
}

TEST(Gguf, ParsesEveryValueTypeInEachVersion) {
    for (uint32_t version : {1u, 2u, 3u}) {
        SCOPED_TRACE(version);
        const std::vector<uint8_t> file = valid_writer(version).bytes();
        const GgufContents c = parse_gguf(as_bytes(file), "t.gguf");
        EXPECT_EQ(c.version, version);
        EXPECT_EQ(c.alignment, 32u);
        EXPECT_EQ(c.metadata.at("u8").u, 200u);
        EXPECT_EQ(c.metadata.at("i8").i, -5);
        EXPECT_EQ(c.metadata.at("u16").u, 60000u);
        EXPECT_EQ(c.metadata.at("i16").i, -30000);
        EXPECT_EQ(c.metadata.at("u32").u, 4000000000u);
        EXPECT_EQ(c.metadata.at("i32").i, -7);
        EXPECT_EQ(c.metadata.at("f32").f, 0.25);
        EXPECT_TRUE(c.metadata.at("bool").b);
        EXPECT_EQ(c.metadata.at("u64").u, 1ull << 40);
        EXPECT_EQ(c.metadata.at("i64").i, -(1ll << 40));
        EXPECT_EQ(c.metadata.at("f64").f, 1e-300);
        EXPECT_EQ(c.metadata.at("strings").array.at(2).str, "ccc");
        const GgufValue& nested = c.metadata.at("nested");
        ASSERT_EQ(nested.array.size(), 2u);
        EXPECT_EQ(nested.element_type, GgufValueType::Array);
        EXPECT_EQ(nested.array[0].array.at(1).i, 2);
        EXPECT_TRUE(nested.array[1].array.empty());
        ASSERT_EQ(c.tensors.size(), 2u);
        EXPECT_EQ(c.tensors[0].shape, (std::vector<int64_t>{2, 3}));  // outermost first
        EXPECT_EQ(c.tensors[0].dtype, DType::F32);
        float second;
        std::memcpy(&second, c.tensors[0].data + 4, 4);
        EXPECT_EQ(second, 1.5f);
        EXPECT_EQ(c.tensors[1].dtype, DType::Q8_0);
        EXPECT_EQ(c.tensors[1].bytes, 68u);
        EXPECT_EQ((c.tensors[1].data - reinterpret_cast<const std::byte*>(file.data())) % 32, 0);
    }
}

TEST(Gguf, HonoursGeneralAlignment) {
    GgufWriter w = valid_writer();
    w.add_u32("general.alignment", 64);
    const std::vector<uint8_t> file = w.bytes(64);
    const GgufContents c = parse_gguf(as_bytes(file), "t.gguf");
    EXPECT_EQ(c.alignment, 64u);
    EXPECT_EQ((c.tensors[1].data - reinterpret_cast<const std::byte*>(file.data())) % 64, 0);

    GgufWriter bad = valid_writer();
    bad.add_u32("general.alignment", 48);
    EXPECT_ERROR_HAS(parse_error(bad.bytes()), "general.alignment: 48 is not a power of two");
}

TEST(Gguf, EveryTruncationIsAnError) {
    const std::vector<uint8_t> file = valid_writer().bytes();
    for (size_t n = 0; n < file.size(); ++n) {
        const std::vector<uint8_t> part(file.begin(), file.begin() + std::ptrdiff_t(n));
        const std::string message = parse_error(part);
        EXPECT_FALSE(message.empty()) << "prefix of " << n << " bytes accepted";
    }
}

TEST(Gguf, WrongMagicAndVersion) {
    std::vector<uint8_t> file = valid_writer().bytes();
    file[0] = 'X';
    EXPECT_ERROR_HAS(parse_error(file), "t.gguf: not a GGUF file");
    file = valid_writer().bytes();
    std::reverse(file.begin(), file.begin() + 4);
    EXPECT_ERROR_HAS(parse_error(file), "big-endian");
    file = valid_writer().bytes();
    file[4] = 4;
    EXPECT_ERROR_HAS(parse_error(file), "unknown GGUF version 4");
}

TEST(Gguf, LyingLengthsNameTheKey) {
    // The string value of general.architecture claims 2^40 bytes.
    std::vector<uint8_t> file = valid_writer().bytes();
    const size_t value = find(file, "llama") - 8;
    const auto huge = le<uint64_t>(1ull << 40);
    std::copy(huge.begin(), huge.end(), file.begin() + std::ptrdiff_t(value));
    std::string message = parse_error(file);
    EXPECT_ERROR_HAS(message, "metadata general.architecture");
    EXPECT_ERROR_HAS(message, "runs past the end of the file");

    // The array "strings" claims 2^60 elements: refused before anything is allocated.
    file = valid_writer().bytes();
    const size_t count = find(file, "strings") + 7 + 4 + 4;  // key, type 9, element type
    const auto lie = le<uint64_t>(1ull << 60);
    std::copy(lie.begin(), lie.end(), file.begin() + std::ptrdiff_t(count));
    message = parse_error(file);
    EXPECT_ERROR_HAS(message, "metadata strings");
    EXPECT_ERROR_HAS(message, "array of 1152921504606846976 string");
}

TEST(Gguf, BadTensorsNameTheTensor) {
    {  // data beyond the end of the file
        GgufWriter w = valid_writer();
        w.add_tensor("far.weight", 0, {4}, {}, 4096);
        const std::string message = parse_error(w.bytes());
        EXPECT_ERROR_HAS(message, "tensor far.weight: data [4096, 4112) runs past");
    }
    {  // unknown and removed type ids
        for (uint32_t type : {4u, 99u}) {
            GgufWriter w = valid_writer();
            w.add_tensor("odd.weight", type, {4}, std::vector<uint8_t>(16));
            EXPECT_ERROR_HAS(parse_error(w.bytes()), "tensor odd.weight: unknown tensor type id");
        }
    }
    {  // an offset that is not a multiple of the alignment
        GgufWriter w = valid_writer();
        w.add_tensor("mis.weight", 0, {1}, f32_data(1), 132);
        EXPECT_ERROR_HAS(
            parse_error(w.bytes()),
            "tensor mis.weight: data offset 132 is not a multiple of the alignment 32");
    }
    {  // rows that are not whole blocks
        GgufWriter w = valid_writer();
        w.add_tensor("half.weight", 8, {16, 2}, std::vector<uint8_t>(34));
        EXPECT_ERROR_HAS(parse_error(w.bytes()),
                         "tensor half.weight: first dimension 16 is not a multiple of the q8_0 "
                         "block size 32");
    }
    {  // too many dimensions, a duplicate name, overlapping data
        GgufWriter w = valid_writer();
        w.add_tensor("five.weight", 0, {1, 1, 1, 1, 1}, f32_data(1));
        EXPECT_ERROR_HAS(parse_error(w.bytes()), "tensor five.weight: 5 dimensions");
        GgufWriter d = valid_writer();
        d.add_tensor("a.weight", 0, {1}, f32_data(1));
        EXPECT_ERROR_HAS(parse_error(d.bytes()), "tensor a.weight: name appears twice");
        GgufWriter o = valid_writer();
        o.add_tensor("over.weight", 0, {4}, f32_data(4), 0);
        EXPECT_ERROR_HAS(parse_error(o.bytes()), "overlap");
    }
}

TEST(Gguf, DeepNestingAndBadBoolAreErrors) {
    GgufWriter w;
    std::vector<uint8_t> value;
    for (int depth = 0; depth < 20; ++depth) {
        const auto type = le<uint32_t>(9);
        value.insert(value.end(), type.begin(), type.end());
        const auto one = w.count_bytes(1);
        value.insert(value.end(), one.begin(), one.end());
    }
    w.add("deep", 9, value);
    EXPECT_ERROR_HAS(parse_error(w.bytes()), "metadata deep");
    GgufWriter b;
    b.add("flag", 7, {2});
    EXPECT_ERROR_HAS(parse_error(b.bytes()), "metadata flag: bool value 2");
}

TEST(Gguf, SplitFilesAreOpenedTogether) {
    test::TempDir dir;
    for (int i = 0; i < 2; ++i) {
        GgufWriter w;
        w.add("split.no", 2, le<uint16_t>(uint16_t(i)));
        w.add("split.count", 2, le<uint16_t>(2));
        if (i == 0) w.add("split.tensors.count", 5, le<int32_t>(2));
        w.add_tensor(i == 0 ? "first.weight" : "second.weight", 0, {2}, f32_data(2));
        w.write(dir.str() + "/m-0000" + std::to_string(i + 1) + "-of-00002.gguf");
    }
    for (const char* name : {"/m-00001-of-00002.gguf", "/m-00002-of-00002.gguf"}) {
        const GgufModelFiles files = GgufModelFiles::open(dir.str() + name);
        EXPECT_NE(files.find("first.weight"), nullptr);
        EXPECT_NE(files.find("second.weight"), nullptr);
    }
    std::filesystem::remove(dir.str() + "/m-00002-of-00002.gguf");
    try {
        GgufModelFiles::open(dir.str() + "/m-00001-of-00002.gguf");
        ADD_FAILURE() << "a missing split was not noticed";
    } catch (const Error& e) {
        EXPECT_ERROR_HAS(std::string(e.what()), "m-00002-of-00002.gguf: cannot open");
    }
}

std::string load_error(const std::string& path) {
    try {
        load_model(path);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST(Gguf, LoaderErrorsNameKeyAndTensor) {
    test::TempDir dir;
    const std::string path = dir.str() + "/m.gguf";
    GgufWriter w;
    w.add_string("general.architecture", "falcon");
    w.write(path);
    EXPECT_ERROR_HAS(load_error(path), "general.architecture: 'falcon' is not supported");

    GgufWriter q;
    q.add_string("general.architecture", "qwen2");
    q.add_tensor("token_embd.weight", 0, {4, 8}, f32_data(32));
    q.write(path);
    EXPECT_ERROR_HAS(load_error(path), "m.gguf: metadata qwen2.embedding_length: missing");

    // A layer count beyond what the file could hold (it would be looped over).
    q.add_u32("qwen2.embedding_length", 8);
    GgufWriter lie = q;
    lie.add_u32("qwen2.block_count", 4000000000u);
    lie.write(path);
    EXPECT_ERROR_HAS(load_error(path), "qwen2.block_count: 4000000000 layers, but the file holds");

    // A tensor the loader has no place for is an error, not silently dropped.
    q.add_u32("qwen2.block_count", 1);
    q.add_u32("qwen2.attention.head_count", 2);
    q.add_u32("qwen2.context_length", 16);
    q.add_f32("qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
    q.add_u32("qwen2.feed_forward_length", 16);
    q.add_tensor("blk.0.attn_sinks.weight", 0, {2}, f32_data(2));
    q.write(path);
    EXPECT_ERROR_HAS(load_error(path),
                     "m.gguf: tensor blk.0.attn_sinks.weight: not a weight of "
                     "Qwen2ForCausalLM");

    // A weight in a type Tandem cannot compute with: the llama fixture with ffn_down's type
    // rewritten to q4_1 (its bytes still lie inside the file).
    std::ifstream in(test::data_dir() + "/gguf/llama/model-f32.gguf", std::ios::binary);
    std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
    const std::string name = "blk.0.ffn_down.weight";
    const size_t type_at = find(file, name) + name.size() + 4 + 2 * 8;  // n_dims, 2 dims
    ASSERT_EQ(file[type_at], 0);                                        // f32
    file[type_at] = 3;                                                  // q4_1
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(file.data()), std::streamsize(file.size()));
    const std::string message = load_error(path);
    EXPECT_ERROR_HAS(message, "m.gguf: tensor blk.0.ffn_down.weight");
    EXPECT_ERROR_HAS(message, "q4_1 (unsupported dtype)");
}

// `path` written again to `out` with the metadata `key` set to the u32 `value` (added when absent)
// and without the tensor `drop`.
void rewrite_gguf(const std::string& path, const std::string& out, const std::string& key,
                  uint32_t value, const std::string& drop = "") {
    const GgufModelFiles files = GgufModelFiles::open(path);
    GgufWriter w;
    for (const auto& [k, v] : files.first().contents().metadata)
        if (k != key) w.add_value(k, v);
    if (!key.empty()) w.add_u32(key, value);
    for (const GgufTensor* t : files.tensors()) {
        if (t->name == drop) continue;
        const auto* data = reinterpret_cast<const uint8_t*>(t->data);
        w.add_tensor(t->name, t->ggml_type, {t->shape.rbegin(), t->shape.rend()},
                     {data, data + t->bytes});
    }
    w.write(out);
}

// The deepseek2 fixtures (tools/make_gguf_fixtures.py): both converter generations give the same
// DeepseekV2Config, and the router decides between V2 and V3.
TEST(Gguf, Deepseek2MetadataBecomesDeepseekConfig) {
    const std::string dir = test::data_dir() + "/gguf/";
    for (const char* file : {"deepseek_v2/model-f32.gguf", "deepseek_v2/model-f16.gguf"}) {
        SCOPED_TRACE(file);  // kv_b whole, key_length per head; split, key_length_mla
        const nlohmann::json c = gguf_model_config(GgufModelFiles::open(dir + file));
        EXPECT_EQ(c["architectures"][0], "DeepseekV2ForCausalLM");
        EXPECT_EQ(c["num_key_value_heads"], 2);
        EXPECT_TRUE(c["q_lora_rank"].is_null());
        EXPECT_EQ(c["kv_lora_rank"], 64);
        EXPECT_EQ(c["qk_nope_head_dim"], 32);
        EXPECT_EQ(c["qk_rope_head_dim"], 8);
        EXPECT_EQ(c["v_head_dim"], 16);
        EXPECT_EQ(c["first_k_dense_replace"], 1);
        EXPECT_EQ(c["n_shared_experts"], 2);
        EXPECT_EQ(c["scoring_func"], "softmax");
        EXPECT_EQ(c["topk_method"], "group_limited_greedy");
        EXPECT_EQ(c["n_group"], 4);
        EXPECT_EQ(c["topk_group"], 2);
        EXPECT_EQ(c["rope_scaling"]["attention_factor"], 1.0);
        EXPECT_NEAR(c["rope_scaling"]["mscale_all_dim"].get<double>(), 0.707, 1e-6);
    }
    const nlohmann::json v3 =
        gguf_model_config(GgufModelFiles::open(dir + "deepseek_v3/model-q8_0.gguf"));
    EXPECT_EQ(v3["architectures"][0], "DeepseekV3ForCausalLM");
    EXPECT_EQ(v3["topk_method"], "noaux_tc");
    EXPECT_EQ(v3["q_lora_rank"], 32);
    EXPECT_EQ(v3["norm_topk_prob"], true);
    EXPECT_NEAR(v3["routed_scaling_factor"].get<double>(), 2.5, 1e-6);
}

// glm4moe (tools/make_gguf_fixtures.py): the next-token (MTP) block that block_count includes
// is not a decoder layer; DeepSeek-V3's router keys and GLM's attention options come through.
TEST(Gguf, Glm4moeMetadataBecomesGlmConfig) {
    const nlohmann::json c =
        gguf_model_config(GgufModelFiles::open(test::data_dir() + "/gguf/glm4_moe/model-f32.gguf"));
    EXPECT_EQ(c["architectures"][0], "Glm4MoeForCausalLM");
    EXPECT_EQ(c["num_hidden_layers"], 2);  // block_count 3 - nextn_predict_layers 1
    EXPECT_EQ(c["num_nextn_predict_layers"], 1);
    EXPECT_EQ(c["first_k_dense_replace"], 1);
    EXPECT_EQ(c["n_routed_experts"], 4);
    EXPECT_EQ(c["n_shared_experts"], 1);
    EXPECT_EQ(c["n_group"], 2);
    EXPECT_EQ(c["topk_group"], 1);
    EXPECT_EQ(c["norm_topk_prob"], true);
    EXPECT_NEAR(c["routed_scaling_factor"].get<double>(), 2.5, 1e-6);
    EXPECT_NEAR(c["partial_rotary_factor"].get<double>(), 0.25, 1e-12);
    EXPECT_EQ(c["use_qk_norm"], true);
    EXPECT_EQ(c["attention_bias"], true);
}

TEST(Gguf, Deepseek2RouterErrorsNameKeyAndTensor) {
    test::TempDir dir;
    const std::string v3 = test::data_dir() + "/gguf/deepseek_v3/model-f16.gguf";
    const std::string path = dir.str() + "/m.gguf";
    rewrite_gguf(v3, path, "deepseek2.expert_gating_func", 2, "blk.1.exp_probs_b.bias");
    EXPECT_ERROR_HAS(load_error(path), "m.gguf: missing tensor blk.1.exp_probs_b.bias");
    rewrite_gguf(v3, path, "deepseek2.expert_gating_func", 1);
    EXPECT_ERROR_HAS(load_error(path),
                     "tensor blk.1.exp_probs_b.bias: a selection bias with "
                     "softmax routing is not supported");
    rewrite_gguf(v3, path, "deepseek2.expert_gating_func", 3);
    EXPECT_ERROR_HAS(load_error(path), "deepseek2.expert_gating_func: 3 is not supported");
    // A file with k_b but not v_b: the binder names what is missing.
    rewrite_gguf(v3, path, "", 0, "blk.0.attn_v_b.weight");
    EXPECT_ERROR_HAS(load_error(path), "missing tensor model.layers.0.self_attn.v_b_proj.weight");
    // DeepSeek's tensor names mean nothing in another architecture's file.
    const std::string qwen = test::data_dir() + "/gguf/qwen2/model-f32.gguf";
    const GgufModelFiles q = GgufModelFiles::open(qwen);
    GgufWriter w;
    for (const auto& [k, v] : q.first().contents().metadata)
        w.add_value(k, v);
    for (const GgufTensor* t : q.tensors()) {
        const auto* data = reinterpret_cast<const uint8_t*>(t->data);
        w.add_tensor(t->name, t->ggml_type, {t->shape.rbegin(), t->shape.rend()},
                     {data, data + t->bytes});
    }
    w.add_tensor("blk.0.attn_kv_b.weight", 0, {2}, f32_data(2));
    w.write(path);
    EXPECT_ERROR_HAS(load_error(path),
                     "tensor blk.0.attn_kv_b.weight: not a weight of "
                     "Qwen2ForCausalLM");
}

TEST(Gguf, FuzzHarnessSurvivesRandomMutations) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const std::vector<uint8_t> base = valid_writer().bytes();
    for (int round = 0; round < 20000; ++round) {
        std::vector<uint8_t> file = base;
        const int edits = 1 + int(rng() % 4);
        for (int e = 0; e < edits && !file.empty(); ++e) {
            switch (rng() % 4) {
                case 0: file[rng() % file.size()] = uint8_t(rng()); break;
                case 1:  // a small or huge little-endian count somewhere
                {
                    const size_t at = rng() % file.size();
                    const uint64_t v = rng() % 2 ? rng() % 300 : rng();
                    for (size_t i = 0; i < 8 && at + i < file.size(); ++i)
                        file[at + i] = uint8_t(v >> (8 * i));
                    break;
                }
                case 2: file.resize(rng() % (file.size() + 1)); break;
                default:
                    file.insert(file.begin() + std::ptrdiff_t(rng() % (file.size() + 1)),
                                uint8_t(rng()));
            }
        }
        LLVMFuzzerTestOneInputGguf(file.data(), file.size());
    }
    LLVMFuzzerTestOneInputGguf(base.data(), base.size());
}

}  // namespace
}  // namespace tandem
