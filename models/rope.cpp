#include "models/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/error.h"

namespace tandem {

namespace {

// YaRN (arXiv 2309.00071) as transformers' _compute_yarn_parameters: frequencies that turn
// fewer than beta_slow times over the original context are interpolated (divided by factor),
// those turning more than beta_fast times are kept, with a linear ramp between; float32
// arithmetic where transformers uses float32 tensors, double where it uses Python floats.
void apply_yarn(const RopeConfig& rope, int64_t dim, std::vector<double>& inv_freq) {
    const double base = rope.theta, context = double(rope.original_max_position_embeddings);
    auto correction_dim = [&](double rotations) {
        return double(dim) * std::log(context / (rotations * 2.0 * std::numbers::pi)) /
               (2.0 * std::log(base));
    };
    double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
    if (rope.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, double(dim - 1));
    if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
    for (size_t i = 0; i < inv_freq.size(); ++i) {
        const float pos_freq = std::pow(float(base), float(2 * i) / float(dim));
        const float extrapolated = 1.0f / pos_freq;
        const float interpolated = 1.0f / (float(rope.factor) * pos_freq);
        const float ramp = std::clamp((float(i) - float(low)) / float(high - low), 0.0f, 1.0f);
        const float keep = 1.0f - ramp;
        inv_freq[i] = double(interpolated * (1.0f - keep) + extrapolated * keep);
    }
}

double yarn_mscale(double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

}  // namespace

double rope_attention_factor(const RopeConfig& rope) {
    if (rope.type != "yarn") return 1.0;
    if (rope.attention_factor) return *rope.attention_factor;
    if (rope.mscale != 0 && rope.mscale_all_dim != 0)
        return yarn_mscale(rope.factor, rope.mscale) /
               yarn_mscale(rope.factor, rope.mscale_all_dim);
    return yarn_mscale(rope.factor, 1.0);
}

double deepseek_softmax_mscale(const RopeConfig& rope) {
    if (rope.type == "default" || rope.mscale_all_dim == 0) return 1.0;
    const double m = yarn_mscale(rope.factor, rope.mscale_all_dim);
    return m * m;
}

std::vector<double> rope_inv_freq(const ModelConfig& config) {
    const int64_t dim =
        int64_t(std::lround(double(config.head_dim) * config.rope.partial_rotary_factor));
    std::vector<double> inv_freq(static_cast<size_t>(dim / 2));
    for (int64_t i = 0; i < dim / 2; ++i) {
        // float32 arithmetic on purpose: the reference computes these in float32.
        const float exponent = float(2 * i) / float(dim);
        inv_freq[size_t(i)] = double(1.0f / std::pow(float(config.rope.theta), exponent));
    }
    const RopeConfig& rope = config.rope;
    if (rope.type == "yarn") {
        apply_yarn(rope, dim, inv_freq);
    } else if (rope.type == "linear") {
        for (double& f : inv_freq)
            f /= rope.factor;
    } else if (rope.type == "llama3") {
        const double old_context = double(rope.original_max_position_embeddings);
        const double low_freq_wavelen = old_context / rope.low_freq_factor;
        const double high_freq_wavelen = old_context / rope.high_freq_factor;
        for (double& f : inv_freq) {
            const double wavelen = 2.0 * std::numbers::pi / f;
            if (wavelen > low_freq_wavelen) {
                f /= rope.factor;  // long wavelengths: fully interpolated
            } else if (wavelen >= high_freq_wavelen) {
                // Between the two: blend the interpolated and the original frequency.
                const double smooth = (old_context / wavelen - rope.low_freq_factor) /
                                      (rope.high_freq_factor - rope.low_freq_factor);
                f = (1.0 - smooth) * f / rope.factor + smooth * f;
            }
        }
    }
    if (!config.rope.freq_factors.empty()) {
        if (config.rope.freq_factors.size() != inv_freq.size())
            fail("rope: ", config.rope.freq_factors.size(), " frequency factors for ",
                 inv_freq.size(), " rotary frequencies");
        for (size_t i = 0; i < inv_freq.size(); ++i)
            inv_freq[i] /= config.rope.freq_factors[i];
    }
    return inv_freq;
}

}  // namespace tandem
