#include "kernels/cpu/latent_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/linear.h"
#include "kernels/error.h"

namespace tandem::cpu {

namespace {

void check_args(const LatentAttentionArgs& a) {
    for (const auto& [t, name] : {std::pair{&a.q, "q"}, {&a.out, "out"}})
        if (t->rank() != 3 || t->dtype() != DType::F32 || !t->is_contiguous())
            fail("latent_attention: ", name, " must be a contiguous rank-3 f32 tensor, got ",
                 t->describe());
    if (a.cache.empty()) fail("latent_attention: the cache is empty");
    const int64_t row = a.cache.head_dim;
    if (a.cache.n_heads != 1 || a.q.dim(2) != row || a.rope_dim < 0 || a.rope_dim >= row ||
        a.out.dim(0) != a.q.dim(0) || a.out.dim(1) != a.q.dim(1) ||
        a.out.dim(2) != row - a.rope_dim)
        fail("latent_attention: q ", a.q.describe(), ", cache rows of ", a.cache.n_heads, " x ",
             row, ", out ", a.out.describe(), " and rope_dim ", a.rope_dim, " disagree");
    if (a.start_pos < 0 || a.start_pos + a.q.dim(0) > a.cache.capacity)
        fail("latent_attention: positions [", a.start_pos, ", ", a.start_pos + a.q.dim(0),
             ") exceed the cache capacity ", a.cache.capacity);
}

}  // namespace

void latent_attention(const LatentAttentionArgs& a, ThreadPool& pool) {
    check_args(a);
    const int64_t n_new = a.q.dim(0), n_heads = a.q.dim(1), row = a.q.dim(2);
    const int64_t latent_dim = row - a.rope_dim;
    const float* q = a.q.data_as<const float>();
    float* out = a.out.data_as<float>();

    pool.run(n_new * n_heads, [&](int64_t task) {
        const int64_t t = task / n_heads, h = task % n_heads, pos = a.start_pos + t;
        const float* qh = q + (t * n_heads + h) * row;
        thread_local std::vector<float> scores;
        scores.resize(size_t(pos + 1));
        float max_score = -INFINITY;
        for (int64_t j = 0; j <= pos; ++j) {
            const float s = dot_f32(qh, a.cache.row(j), row) * a.scale;
            scores[size_t(j)] = s;
            max_score = std::max(max_score, s);
        }
        float total = 0.0f;
        for (float& s : scores) {
            s = std::exp(s - max_score);
            total += s;
        }
        float* oh = out + (t * n_heads + h) * latent_dim;
        std::fill(oh, oh + latent_dim, 0.0f);
        for (int64_t j = 0; j <= pos; ++j) {
            const float p = scores[size_t(j)] / total;
            const float* vj = a.cache.row(j) + a.rope_dim;
            for (int64_t d = 0; d < latent_dim; ++d)
                oh[d] += p * vj[d];
        }
    });
}

}  // namespace tandem::cpu
