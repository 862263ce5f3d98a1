// Helpers shared by the tests: fresh random seeds (printed on failure), temporary directories,
// the path of committed test data, and a float64 reference for comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <tandem/engine.h>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/tensor.h"

namespace tandem::test {

// A new seed each run, so the tests keep drawing new inputs; SCOPED_TRACE it so a failure can be
// replayed (TANDEM_TEST_SEED=<seed> in the environment fixes it).
uint64_t fresh_seed();

#define TANDEM_SEEDED(seed_var)                             \
    const uint64_t seed_var = ::tandem::test::fresh_seed(); \
    SCOPED_TRACE(::testing::Message() << "seed " << seed_var)

std::string data_dir();    // tests/data in the source tree
std::string shared_dir();  // ../shared next to the repository, may not exist

// A directory removed (with its contents) when the object dies.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::string str() const { return path_.string(); }

  private:
    std::filesystem::path path_;
};

// Every CPU kernel ISA this machine runs, the scalar path always: tests loop over them with
// cpu::force_isa.
std::vector<cpu::CpuIsa> runnable_isas();

// Restores the detected ISA when a test ends, pass or fail.
struct IsaGuard {
    ~IsaGuard() { cpu::force_isa(std::nullopt); }
};

// Normal(0, std) values.
std::vector<float> random_floats(std::mt19937_64& rng, size_t n, float std = 1.0f);
// Token ids uniform in [0, vocab).
std::vector<int32_t> random_tokens(std::mt19937_64& rng, int64_t length, int32_t vocab);

// Writes a small valid Qwen3-MoE checkpoint (random weights, f32) into dir.
void write_tiny_model(const std::string& dir, uint64_t seed = 1);
// The same with hidden 256 and expert rows of 256, so every K-quant runs without fallback.
void write_small_quantizable_model(const std::string& dir, uint64_t seed = 1);

// A suite's two tiny models of the same shape (write_tiny_model seeds 1 and 2: weights to
// reload), written once per suite.
class TwoTinyModelsTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        a_ = new TempDir();
        b_ = new TempDir();
        write_tiny_model(a_->str(), 1);
        write_tiny_model(b_->str(), 2);
    }
    static void TearDownTestSuite() {
        delete a_;
        delete b_;
    }
    inline static TempDir *a_ = nullptr, *b_ = nullptr;
};

// The hybrid executor's test model: 16 experts, top-4, 3 MoE layers, f32 (budgets of 25 and
// 50 % leave real choices), and a hardware profile on which both the CPU and the device are
// worth using for its tiny experts, so that every planner splits the layers (the paper's profile
// would send them all to the CPU). The profile's path is returned.
void write_hybrid_model(const std::string& dir, uint64_t seed);
std::string write_hybrid_profile(const std::string& dir);

// Logits of a prefill of `prompt` (every position), then of each token of `decode` one at a
// time, through the engine's model directly, in one KV cache.
std::vector<float> prefill_then_decode(Engine& engine, std::span<const int32_t> prompt,
                                       std::span<const int32_t> decode);

// Submits `prompt` for up to 60 greedy tokens, holds the engine in the stream callback once
// `after` tokens have come until the abort is in (or the request would finish first), aborts it
// and returns its output: an abort between two steps, with whatever the last step left queued.
RequestOutput generate_then_abort(Engine& engine, std::span<const int32_t> prompt, int after);

}  // namespace tandem::test
