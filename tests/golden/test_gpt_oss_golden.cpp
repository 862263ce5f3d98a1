// gpt-oss with MXFP4 experts (tests/data/golden/gpt_oss/mxfp4, written by tools/make_golden.py:
// the f32 fixture's experts quantized to the Hub's *_blocks / *_scales layout; the reference is
// transformers' own dequantization of that file). The f32 and bf16 fixtures run the shared
// golden suites of test_golden.cpp; here:
//   - the repacked experts equal transformers' dequantized ones, every element of layer 0 (the
//     nibble order, the scale and the gate/up interleave of the Hub's layout);
//   - the logits are transformers' within the one approximation MXFP4 weights bring here: the
//     dot products' 8-bit (Q8_0) activations;
//   - `--quantize mxfp4` at load on the f32 fixture gives the fixture's blocks byte for byte;
//   - the GGUF fixture of the same weights reads back equal.
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <tuple>

#include "engine/src/engine_internals.h"
#include "kernels/cpu/quant.h"
#include "models/decoder.h"
#include "tests/golden/golden_reference.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

std::string fixture(const std::string& tag) {
    return test::data_dir() + "/golden/gpt_oss/" + tag;
}

std::vector<float> dequantized(const Tensor& w) {
    const int64_t rows = w.dim(0), k = w.dim(1);
    std::vector<float> out(size_t(rows * k));
    for (int64_t r = 0; r < rows; ++r)
        cpu::dequantize_row(w.dtype(),
                            static_cast<const std::byte*>(w.data()) + r * row_bytes(w.dtype(), k),
                            out.data() + r * k, k);
    return out;
}

// Per position: relative L2 distance of the logits.
std::vector<double> position_distances(std::span<const float> got, std::span<const float> want,
                                       size_t vocab) {
    std::vector<double> out;
    for (size_t pos = 0; pos < want.size() / vocab; ++pos) {
        double diff = 0, norm = 0;
        for (size_t v = pos * vocab; v < (pos + 1) * vocab; ++v) {
            diff += std::pow(double(got[v]) - want[v], 2);
            norm += double(want[v]) * want[v];
        }
        out.push_back(std::sqrt(diff / norm));
    }
    return out;
}

std::vector<float> prefill(Engine& engine, std::span<const int32_t> prompt) {
    KvCache cache(engine_model(engine).kv_cache_shape(int64_t(prompt.size())));
    const SequenceStep step{.tokens = prompt, .cache = &cache, .all_logits = true};
    OwnedTensor logits = engine_model(engine).forward({&step, 1}, engine_pool(engine));
    return {logits.view.data_as<float>(), logits.view.data_as<float>() + logits.view.numel()};
}

TEST(GoldenGptOssMxfp4, ExpertsEqualTransformersDequantization) {
    Engine engine =
        Engine::open({.model_dir = fixture("mxfp4"), .n_threads = 2, .pin_threads = false});
    const Reference ref = read_reference(fixture("mxfp4") + "/reference.safetensors");
    const auto* decoder = dynamic_cast<const Decoder*>(&engine_model(engine));
    ASSERT_NE(decoder, nullptr);
    const ModelConfig& c = decoder->config();
    const int64_t E = c.n_experts, H = c.hidden_dim, F = c.expert_ffn_dim;
    ASSERT_EQ(ref.experts0_gate_up.size(), size_t(E * H * 2 * F));
    ASSERT_EQ(ref.experts0_down.size(), size_t(E * F * H));
    for (int64_t e = 0; e < E; ++e) {
        const cpu::ExpertWeights& w = decoder->weights().layers[0].moe.experts[size_t(e)];
        ASSERT_EQ(w.gate.dtype(), DType::MXFP4);
        ASSERT_EQ(w.down.dtype(), DType::MXFP4);
        const auto gate = dequantized(w.gate), up = dequantized(w.up), down = dequantized(w.down);
        for (int64_t i = 0; i < F; ++i)
            for (int64_t h = 0; h < H; ++h) {
                const size_t at = size_t((e * H + h) * 2 * F + 2 * i);
                ASSERT_EQ(gate[size_t(i * H + h)], ref.experts0_gate_up[at])
                    << "expert " << e << " gate row " << i << " column " << h;
                ASSERT_EQ(up[size_t(i * H + h)], ref.experts0_gate_up[at + 1])
                    << "expert " << e << " up row " << i << " column " << h;
            }
        for (int64_t o = 0; o < H; ++o)
            for (int64_t j = 0; j < F; ++j)
                ASSERT_EQ(down[size_t(o * F + j)], ref.experts0_down[size_t((e * F + j) * H + o)])
                    << "expert " << e << " down row " << o << " column " << j;
    }
}

// The MXFP4 weights are transformers' exactly (above); what differs is the dot products' Q8_0
// activations (the same approximation as every quantized type here), so every position must be
// within 2e-2 relative L2 and every top token with a margin over 0.1 the same.
TEST(GoldenGptOssMxfp4, LogitsMatchTransformersWithinActivationRounding) {
    Engine engine =
        Engine::open({.model_dir = fixture("mxfp4"), .n_threads = 2, .pin_threads = false});
    const Reference ref = read_reference(fixture("mxfp4") + "/reference.safetensors");
    const auto vocab = size_t(engine.model_config().vocab_size);
    const std::vector<float> got = prefill(engine, ref.prompt);
    ASSERT_EQ(got.size(), ref.logits.size());
    for (float v : got)
        ASSERT_TRUE(std::isfinite(v));
    const std::vector<double> d = position_distances(got, ref.logits, vocab);
    const double worst = *std::max_element(d.begin(), d.end());
    EXPECT_LE(worst, 2e-2);
    for (size_t pos = 0; pos < ref.prompt.size(); ++pos) {
        const std::span<const float> want(ref.logits.data() + pos * vocab, vocab);
        std::vector<float> sorted(want.begin(), want.end());
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
        if (sorted[0] - sorted[1] < 0.1f) continue;
        const std::span<const float> mine(got.data() + pos * vocab, vocab);
        EXPECT_EQ(std::max_element(mine.begin(), mine.end()) - mine.begin(),
                  std::max_element(want.begin(), want.end()) - want.begin())
            << "position " << pos;
    }
    RecordProperty("worst_rel_l2", std::to_string(worst));
}

// `--quantize mxfp4` on the f32 fixture: Tandem's quantizer and tools/make_golden.py's (written
// separately, same rule: the smallest power-of-two scale keeping the block within 6, nearest
// e2m1, ties to even) must give the mxfp4 fixture's experts byte for byte, in every layer. The
// logits are not compared with a bound: 4-bit attention and lm_head on a hidden-64 model move
// them by whole units (the experts alone move transformers' own logits by up to 3).
TEST(GoldenGptOssMxfp4, QuantizeAtLoadGivesTheCheckpointsBlocks) {
    Engine quantized = Engine::open(
        {.model_dir = fixture("f32"), .n_threads = 2, .pin_threads = false, .quantize = "mxfp4"});
    Engine stored =
        Engine::open({.model_dir = fixture("mxfp4"), .n_threads = 2, .pin_threads = false});
    const auto* a = dynamic_cast<const Decoder*>(&engine_model(quantized));
    const auto* b = dynamic_cast<const Decoder*>(&engine_model(stored));
    ASSERT_TRUE(a != nullptr && b != nullptr);
    const auto &la = a->weights().layers, &lb = b->weights().layers;
    ASSERT_EQ(la.size(), lb.size());
    for (size_t layer = 0; layer < la.size(); ++layer)
        for (size_t e = 0; e < la[layer].moe.experts.size(); ++e) {
            const cpu::ExpertWeights &x = la[layer].moe.experts[e], &y = lb[layer].moe.experts[e];
            for (const auto& [mine, theirs, what] : {std::tuple{&x.gate, &y.gate, "gate"},
                                                     {&x.up, &y.up, "up"},
                                                     {&x.down, &y.down, "down"}}) {
                ASSERT_EQ(mine->dtype(), DType::MXFP4);
                ASSERT_EQ(mine->bytes(), theirs->bytes());
                const auto* p = static_cast<const uint8_t*>(mine->data());
                const auto* q = static_cast<const uint8_t*>(theirs->data());
                for (int64_t i = 0; i < mine->bytes(); ++i)
                    ASSERT_EQ(p[i], q[i])
                        << "layer " << layer << " expert " << e << " " << what << " byte " << i;
            }
        }
    const Reference ref = read_reference(fixture("f32") + "/reference.safetensors");
    for (float v : prefill(quantized, ref.prompt))
        ASSERT_TRUE(std::isfinite(v));
}

// The GGUF fixture (tests/data/gguf/gpt_oss/model-mxfp4.gguf, tools/make_gguf_fixtures.py
// gpt_oss: the mxfp4 checkpoint as llama.cpp's converter lays it out, MXFP4 experts in ggml's
// block order, checked there against gguf-py's dequantizer) reads back as the safetensors
// checkpoint: the same expert bytes, read in place, and the same logits. GGUF has no key for the
// clamped SwiGLU's limit and alpha (llama.cpp hard-codes 7.0 and 1.702) while the fixture's are
// 1.5 and 1.2, so the safetensors side is loaded with its config.json set to 7.0 and 1.702.
TEST(GoldenGptOssGguf, ReadsBackAsTheSafetensorsCheckpoint) {
    test::TempDir dir;
    for (const char* f : {"model.safetensors", "generation_config.json"})
        std::filesystem::copy_file(fixture("mxfp4") + "/" + f, dir.path() / f);
    nlohmann::json config;
    std::ifstream(fixture("mxfp4") + "/config.json") >> config;
    config["swiglu_limit"] = 7.0;
    config["swiglu_alpha"] = 1.702;
    std::ofstream(dir.path() / "config.json") << config.dump();

    const std::string gguf = test::data_dir() + "/gguf/gpt_oss/model-mxfp4.gguf";
    Engine from_gguf = Engine::open({.model_dir = gguf, .n_threads = 2, .pin_threads = false});
    Engine from_st = Engine::open({.model_dir = dir.str(), .n_threads = 2, .pin_threads = false});
    const ModelConfig &a = from_gguf.model_config(), &b = from_st.model_config();
    EXPECT_EQ(a.architecture, "GptOssForCausalLM");
    EXPECT_EQ(a.layer_is_sliding, b.layer_is_sliding);
    EXPECT_EQ(a.sliding_window, b.sliding_window);
    EXPECT_TRUE(a.attention_sinks && a.expert_bias && a.router_logit_bias);
    EXPECT_EQ(a.rope.type, "yarn");
    EXPECT_EQ(a.rope.truncate, b.rope.truncate);

    const auto* dg = dynamic_cast<const Decoder*>(&engine_model(from_gguf));
    const auto* ds = dynamic_cast<const Decoder*>(&engine_model(from_st));
    ASSERT_TRUE(dg != nullptr && ds != nullptr);
    for (size_t layer = 0; layer < dg->weights().layers.size(); ++layer)
        for (size_t e = 0; e < dg->weights().layers[layer].moe.experts.size(); ++e) {
            const cpu::ExpertWeights& x = dg->weights().layers[layer].moe.experts[e];
            const cpu::ExpertWeights& y = ds->weights().layers[layer].moe.experts[e];
            for (const auto& [mine, theirs] :
                 {std::pair{&x.gate, &y.gate}, {&x.up, &y.up}, {&x.down, &y.down}}) {
                ASSERT_EQ(mine->dtype(), DType::MXFP4);
                ASSERT_EQ(mine->bytes(), theirs->bytes());
                ASSERT_EQ(std::memcmp(mine->data(), theirs->data(), size_t(mine->bytes())), 0)
                    << "layer " << layer << " expert " << e;
            }
        }

    const Reference ref = read_reference(fixture("mxfp4") + "/reference.safetensors");
    const std::vector<float> got = prefill(from_gguf, ref.prompt),
                             want = prefill(from_st, ref.prompt);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5) << "element " << i;
}

}  // namespace
}  // namespace tandem
