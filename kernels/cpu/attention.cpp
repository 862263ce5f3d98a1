#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/vec_dot.h"
#include "kernels/error.h"

namespace tandem::cpu {

namespace {

void check_attention_args(const AttentionArgs& a) {
    auto check = [](const Tensor& t, const char* name) {
        if (t.rank() != 3 || t.dtype() != DType::F32 || !t.is_contiguous())
            fail("attention: ", name, " must be a contiguous rank-3 f32 tensor, got ",
                 t.describe());
    };
    check(a.q, "q");
    check(a.k_cache, "k_cache");
    check(a.v_cache, "v_cache");
    check(a.out, "out");
    const int64_t n_new = a.q.dim(0), n_heads = a.q.dim(1), n_kv = a.k_cache.dim(1);
    if (n_kv == 0 || n_heads % n_kv != 0)
        fail("attention: ", n_heads, " query heads are not a multiple of ", n_kv, " KV heads");
    if (a.k_cache.dim(2) != a.q.dim(2) || a.v_cache.dim(1) != n_kv ||
        a.v_cache.dim(0) != a.k_cache.dim(0))
        fail("attention: q ", a.q.describe(), ", k_cache ", a.k_cache.describe(), " and v_cache ",
             a.v_cache.describe(), " disagree");
    if (a.out.dim(0) != n_new || a.out.dim(1) != n_heads || a.out.dim(2) != a.v_cache.dim(2))
        fail("attention: out ", a.out.describe(), " does not match q ", a.q.describe());
    if (a.start_pos < 0 || a.start_pos + n_new > a.k_cache.dim(0))
        fail("attention: positions [", a.start_pos, ", ", a.start_pos + n_new,
             ") exceed the KV cache capacity ", a.k_cache.dim(0));
}

}  // namespace

void attention(const AttentionArgs& a, ThreadPool& pool) {
    check_attention_args(a);
    const int64_t n_new = a.q.dim(0), n_heads = a.q.dim(1), head_dim = a.q.dim(2);
    const int64_t n_kv = a.k_cache.dim(1), v_dim = a.v_cache.dim(2);
    const int64_t group = n_heads / n_kv;
    const float* q = a.q.data_as<const float>();
    const float* k = a.k_cache.data_as<const float>();
    const float* v = a.v_cache.data_as<const float>();
    float* out = a.out.data_as<float>();

    // The dispatch table once per call, not once per score.
    const cpu::RowDotFn dot = vec_dot_kernels().dot_f32;
    pool.run(n_new * n_heads, [&](int64_t task) {
        const int64_t t = task / n_heads, h = task % n_heads, kv = h / group;
        const int64_t pos = a.start_pos + t;
        const int64_t first =
            a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
        const float* qh = q + (t * n_heads + h) * head_dim;
        thread_local std::vector<float> scores;
        scores.resize(size_t(pos + 1 - first));
        float max_score = -INFINITY;
        for (int64_t j = first; j <= pos; ++j) {
            const float s = dot(qh, k + (j * n_kv + kv) * head_dim, head_dim) * a.scale;
            scores[size_t(j - first)] = s;
            max_score = std::max(max_score, s);
        }
        float total = 0.0f;
        for (float& s : scores) {
            s = std::exp(s - max_score);
            total += s;
        }
        float* oh = out + (t * n_heads + h) * v_dim;
        std::fill(oh, oh + v_dim, 0.0f);
        for (int64_t j = first; j <= pos; ++j) {
            const float p = scores[size_t(j - first)] / total;
            const float* vj = v + (j * n_kv + kv) * v_dim;
            for (int64_t d = 0; d < v_dim; ++d)
                oh[d] += p * vj[d];
        }
    });
}

}  // namespace tandem::cpu
