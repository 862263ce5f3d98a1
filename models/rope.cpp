#include "models/rope.h"

#include <cmath>
#include <numbers>

namespace tandem {

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
    if (rope.type == "linear") {
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
    return inv_freq;
}

}  // namespace tandem
