#include "tests/test_util.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "cache/kv_cache.h"
#include "engine/src/engine_internals.h"
#include "tools/synthetic_model.h"

namespace tandem::test {

uint64_t fresh_seed() {
    // TANDEM_TEST_SEED replays a failure: every seeded test of the run draws that seed.
    if (const char* fixed = std::getenv("TANDEM_TEST_SEED"); fixed && *fixed)
        return std::strtoull(fixed, nullptr, 10);
    static std::random_device device;
    return (uint64_t(device()) << 32) ^ device();
}

std::string data_dir() {
    return TANDEM_TEST_DATA_DIR;
}

std::string shared_dir() {
    return (std::filesystem::path(TANDEM_TEST_DATA_DIR) / ".." / ".." / ".." / "shared")
        .lexically_normal()
        .string();
}

TempDir::TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("tandem-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

std::vector<float> random_floats(std::mt19937_64& rng, size_t n, float std) {
    std::normal_distribution<float> normal(0.0f, std);
    std::vector<float> out(n);
    for (float& v : out)
        v = normal(rng);
    return out;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int64_t length, int32_t vocab) {
    std::vector<int32_t> ids(static_cast<size_t>(length));
    for (int32_t& id : ids)
        id = int32_t(rng() % uint64_t(vocab));
    return ids;
}

std::vector<cpu::CpuIsa> runnable_isas() {
    std::vector<cpu::CpuIsa> isas;
    for (cpu::CpuIsa isa : {cpu::CpuIsa::Scalar, cpu::CpuIsa::Avx2, cpu::CpuIsa::Avx512})
        if (int(isa) <= int(cpu::detected_isa())) isas.push_back(isa);
    return isas;
}

namespace {

// A small f32 Qwen3-MoE spec; callers widen what they need.
SyntheticQwen3MoeSpec small_spec(uint64_t seed) {
    SyntheticQwen3MoeSpec spec;
    spec.vocab_size = 96;
    spec.hidden_dim = 32;
    spec.n_layers = 2;
    spec.n_heads = 4;
    spec.n_kv_heads = 2;
    spec.head_dim = 8;
    spec.n_experts = 4;
    spec.n_experts_active = 2;
    spec.expert_ffn_dim = 16;
    spec.max_position_embeddings = 64;
    spec.dtype = DType::F32;
    spec.seed = seed;
    return spec;
}

}  // namespace

void write_tiny_model(const std::string& dir, uint64_t seed) {
    write_synthetic_qwen3_moe(dir, small_spec(seed));
}

void write_hybrid_model(const std::string& dir, uint64_t seed) {
    write_synthetic_qwen3_moe(dir, {.vocab_size = 128,
                                    .hidden_dim = 64,
                                    .n_layers = 3,
                                    .n_heads = 4,
                                    .n_kv_heads = 2,
                                    .head_dim = 16,
                                    .n_experts = 16,
                                    .n_experts_active = 4,
                                    .expert_ffn_dim = 32,
                                    .max_position_embeddings = 128,
                                    .dtype = DType::F32,
                                    .seed = seed});
}

std::string write_hybrid_profile(const std::string& dir) {
    const std::string path = dir + "/profile.json";
    std::ofstream(path) << R"({"name": "test", "cpu_bandwidth_gbs": 20, "cpu_gflops": 50,
        "cpu_expert_overhead_ms": 0.02, "cpu_first_expert_ms": 0.03, "gpu_bandwidth_gbs": 1000,
        "gpu_tflops": 100, "gpu_expert_overhead_ms": 0.01, "pcie_bandwidth_gbs": 25,
        "pcie_latency_ms": 0.01, "gpu_expert_memory_gb": 1})";
    return path;
}

std::vector<float> prefill_then_decode(Engine& engine, std::span<const int32_t> prompt,
                                       std::span<const int32_t> decode) {
    Model& model = engine_model(engine);
    KvCache cache(model.kv_cache_shape(int64_t(prompt.size() + decode.size())));
    std::vector<float> logits;
    auto step = [&](std::span<const int32_t> tokens) {
        const SequenceStep s{.tokens = tokens, .cache = &cache, .all_logits = true};
        OwnedTensor out = model.forward({&s, 1}, engine_pool(engine));
        logits.insert(logits.end(), out.view.data_as<float>(),
                      out.view.data_as<float>() + out.view.numel());
    };
    step(prompt);
    for (size_t i = 0; i < decode.size(); ++i)
        step(decode.subspan(i, 1));
    return logits;
}

RequestOutput generate_then_abort(Engine& engine, std::span<const int32_t> prompt, int after) {
    std::atomic<int> tokens{0};
    std::atomic<bool> aborted{false};
    RequestHandle h = engine.submit(
        Prompt::tokens(std::vector<int32_t>(prompt.begin(), prompt.end())),
        {.temperature = 0, .max_tokens = 60, .ignore_eos = true}, [&](const StreamDelta& d) {
            tokens += int(d.token_ids.size());
            while (tokens == after && !aborted)
                std::this_thread::yield();
        });
    while (tokens < after)
        std::this_thread::yield();
    h.abort();
    aborted = true;
    return h.wait();
}

void write_small_quantizable_model(const std::string& dir, uint64_t seed) {
    SyntheticQwen3MoeSpec spec = small_spec(seed);
    spec.vocab_size = 128;
    spec.hidden_dim = 256;
    spec.head_dim = 64;
    spec.expert_ffn_dim = 256;
    write_synthetic_qwen3_moe(dir, spec);
}

}  // namespace tandem::test
