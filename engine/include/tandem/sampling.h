// SamplingParams and Sampler: how the next token is drawn from a row of logits.
//
// temperature 0 means greedy (argmax). Otherwise, in this order: logits / temperature, softmax,
// top_k (keep the k most probable), top_p (keep the smallest most-probable set whose mass reaches
// top_p), min_p (keep tokens with p >= min_p * p_max), renormalise, draw. A Sampler owns its
// random stream: the same seed, inputs and parameters give the same tokens.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace tandem {

struct SamplingParams {
    float temperature = 1.0f;  // 0: greedy
    int32_t top_k = 0;         // 0: off
    float top_p = 1.0f;        // 1: off
    float min_p = 0.0f;        // 0: off
    uint64_t seed = 0;
    int32_t max_tokens = 16;
    bool ignore_eos = false;
};

// Throws tandem::Error naming the parameter when a value is out of range.
void validate(const SamplingParams& params);

class Sampler {
  public:
    explicit Sampler(const SamplingParams& params);
    int32_t sample(std::span<const float> logits);

  private:
    // Draws from candidates_ in their current order, total = the sum of their weights.
    int32_t draw(double total);

    SamplingParams params_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> candidates_;  // scratch: (probability, token)
};

int32_t argmax(std::span<const float> logits);

}  // namespace tandem
