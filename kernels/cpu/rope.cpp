#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "kernels/error.h"

namespace tandem::cpu {

void apply_rope(const Tensor& x, std::span<const int64_t> positions,
                std::span<const double> inv_freq, double attention_scale) {
    if (x.rank() != 3 || x.dtype() != DType::F32 || !x.is_contiguous())
        fail("apply_rope: x must be a contiguous [n_tokens, n_heads, head_dim] f32 tensor, got ",
             x.describe());
    const int64_t n_tokens = x.dim(0), n_heads = x.dim(1), head_dim = x.dim(2);
    const int64_t half = int64_t(inv_freq.size());
    if (int64_t(positions.size()) != n_tokens)
        fail("apply_rope: ", positions.size(), " positions for ", n_tokens, " tokens");
    if (2 * half > head_dim) fail("apply_rope: rotary dim ", 2 * half, " > head_dim ", head_dim);
    std::vector<float> cos_table(static_cast<size_t>(half)), sin_table(static_cast<size_t>(half));
    float* data = x.data_as<float>();
    for (int64_t t = 0; t < n_tokens; ++t) {
        // Angles in double, rounded once: matches float32 torch to ~1e-7 at these positions.
        for (int64_t i = 0; i < half; ++i) {
            const double angle = double(positions[size_t(t)]) * inv_freq[size_t(i)];
            cos_table[size_t(i)] = float(std::cos(angle) * attention_scale);
            sin_table[size_t(i)] = float(std::sin(angle) * attention_scale);
        }
        for (int64_t h = 0; h < n_heads; ++h) {
            float* v = data + (t * n_heads + h) * head_dim;
            for (int64_t i = 0; i < half; ++i) {
                const float a = v[i], b = v[i + half];
                v[i] = a * cos_table[size_t(i)] - b * sin_table[size_t(i)];
                v[i + half] = b * cos_table[size_t(i)] + a * sin_table[size_t(i)];
            }
        }
    }
}

}  // namespace tandem::cpu
