#include <tandem/sampling.h>
#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/error.h"

namespace tandem {

void validate(const SamplingParams& p) {
    if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
        fail("temperature must be a finite number >= 0, got ", p.temperature);
    if (p.top_k < 0) fail("top_k must be >= 0, got ", p.top_k);
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail("top_p must be in (0, 1], got ", p.top_p);
    if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) fail("min_p must be in [0, 1], got ", p.min_p);
    if (p.max_tokens < 0) fail("max_tokens must be >= 0, got ", p.max_tokens);
    if (p.n < 1 || p.n > 128) fail("n must be in [1, 128], got ", p.n);
    if (p.min_tokens < 0 || p.min_tokens > p.max_tokens)
        fail("min_tokens must be in [0, max_tokens = ", p.max_tokens, "], got ", p.min_tokens);
    for (const std::string& stop : p.stop)
        if (stop.empty()) fail("stop strings must not be empty");
    if (p.stop.size() > 16) fail("at most 16 stop strings, got ", p.stop.size());
    for (const auto& [value, name] : {std::pair{p.presence_penalty, "presence_penalty"},
                                      {p.frequency_penalty, "frequency_penalty"}})
        if (!(value >= -2.0f && value <= 2.0f)) fail(name, " must be in [-2, 2], got ", value);
    if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
        fail("repetition_penalty must be a finite number > 0, got ", p.repetition_penalty);
    if (p.routing_lookahead < 0 || p.routing_lookahead > 3)
        fail("routing_lookahead must be in [0, 3], got ", p.routing_lookahead);
    if (p.logprobs < -1 || p.logprobs > kMaxLogprobs)
        fail("logprobs must be in [0, ", kMaxLogprobs, "] (or -1: none), got ", p.logprobs);
    if (p.prompt_logprobs < -1 || p.prompt_logprobs > kMaxLogprobs)
        fail("prompt_logprobs must be in [0, ", kMaxLogprobs, "] (or -1: none), got ",
             p.prompt_logprobs);
    if (p.grammar && p.grammar->kind != GrammarSpec::Kind::JsonObject && p.grammar->text.empty())
        fail("grammar: the ",
             p.grammar->kind == GrammarSpec::Kind::JsonSchema ? "JSON schema"
             : p.grammar->kind == GrammarSpec::Kind::Regex    ? "regular expression"
                                                              : "EBNF grammar",
             " is empty");
    for (size_t i = 0; i < p.logit_bias.size(); ++i) {
        const auto& [token, bias] = p.logit_bias[i];
        if (token < 0) fail("logit_bias: token ids must be >= 0, got ", token);
        if (!(bias >= -100.0f && bias <= 100.0f))
            fail("logit_bias: biases must be in [-100, 100], got ", bias, " for token ", token);
        for (size_t j = 0; j < i; ++j)
            if (p.logit_bias[j].first == token) fail("logit_bias: token ", token, " appears twice");
    }
}

int32_t argmax(std::span<const float> logits) {
    if (logits.empty()) fail("argmax of an empty row");
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingParams& params, uint64_t seed) : params_(params), rng_(seed) {
    validate(params);
}

int32_t Sampler::sample(std::span<const float> logits) {
    if (params_.logit_bias.empty()) return sample_row(logits);
    biased_.assign(logits.begin(), logits.end());
    for (const auto& [token, bias] : params_.logit_bias) {
        if (size_t(token) >= biased_.size())
            fail("logit_bias: token ", token, " is outside the vocabulary of ", biased_.size());
        biased_[size_t(token)] += bias;  // -inf (masked) stays -inf
    }
    return sample_row(biased_);
}

int32_t Sampler::sample_row(std::span<const float> logits) {
    if (params_.temperature == 0.0f || params_.top_k == 1) return argmax(logits);
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    candidates_.clear();
    double total = 0.0;
    for (size_t i = 0; i < logits.size(); ++i) {
        const float p = std::exp((logits[i] - max_logit) / params_.temperature);
        candidates_.emplace_back(p, int32_t(i));
        total += p;
    }
    const bool filtered = params_.top_k > 0 || params_.top_p < 1.0f || params_.min_p > 0.0f;
    if (!filtered) return draw(total);
    // Most probable first; equal probabilities keep token order so results are reproducible.
    auto by_probability = [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    size_t keep = candidates_.size();
    if (params_.top_k > 0 && size_t(params_.top_k) < keep) {
        keep = size_t(params_.top_k);
        std::partial_sort(candidates_.begin(), candidates_.begin() + std::ptrdiff_t(keep),
                          candidates_.end(), by_probability);
    } else {
        std::sort(candidates_.begin(), candidates_.end(), by_probability);
    }
    if (params_.top_p < 1.0f) {
        double mass = 0.0;
        size_t n = 0;
        while (n < keep && mass < double(params_.top_p) * total)
            mass += candidates_[n++].first;
        keep = std::max<size_t>(n, 1);
    }
    if (params_.min_p > 0.0f) {
        const float floor = params_.min_p * candidates_[0].first;
        size_t n = 1;
        while (n < keep && candidates_[n].first >= floor)
            ++n;
        keep = n;
    }
    candidates_.resize(keep);
    double kept = 0.0;
    for (size_t i = 0; i < keep; ++i)
        kept += candidates_[i].first;
    return draw(kept);
}

int32_t Sampler::draw(double total) {
    // 53 random bits -> [0, 1): the same on every platform, unlike std::uniform_real_distribution.
    const double u = double(rng_() >> 11) * 0x1.0p-53 * total;
    double cumulative = 0.0;
    for (const auto& [p, token] : candidates_) {
        cumulative += p;
        if (u < cumulative) return token;
    }
    return candidates_.back().second;
}

}  // namespace tandem
