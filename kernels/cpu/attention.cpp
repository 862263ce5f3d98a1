#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/vec_dot.h"
#include "kernels/error.h"

namespace tandem::cpu {

namespace {

void check_attention_args(const AttentionArgs& a) {
    for (const auto& [t, name] : {std::pair{&a.q, "q"}, {&a.out, "out"}})
        if (t->rank() != 3 || t->dtype() != DType::F32 || !t->is_contiguous())
            fail("attention: ", name, " must be a contiguous rank-3 f32 tensor, got ",
                 t->describe());
    const KvRows &k = a.k_cache, &v = a.v_cache;
    if (k.empty() || v.empty()) fail("attention: the KV cache is empty");
    const int64_t n_new = a.q.dim(0), n_heads = a.q.dim(1), n_kv = k.n_heads;
    if (n_kv == 0 || n_heads % n_kv != 0)
        fail("attention: ", n_heads, " query heads are not a multiple of ", n_kv, " KV heads");
    if (k.head_dim != a.q.dim(2) || v.n_heads != n_kv || v.capacity != k.capacity)
        fail("attention: q ", a.q.describe(), ", keys of ", n_kv, " x ", k.head_dim,
             " and values of ", v.n_heads, " x ", v.head_dim, " disagree");
    if (a.out.dim(0) != n_new || a.out.dim(1) != n_heads || a.out.dim(2) != v.head_dim)
        fail("attention: out ", a.out.describe(), " does not match q ", a.q.describe());
    if (a.start_pos < 0 || a.start_pos + n_new > k.capacity)
        fail("attention: positions [", a.start_pos, ", ", a.start_pos + n_new,
             ") exceed the KV cache capacity ", k.capacity);
}

}  // namespace

void attention(const AttentionArgs& a, ThreadPool& pool) {
    check_attention_args(a);
    const int64_t n_new = a.q.dim(0), n_heads = a.q.dim(1), head_dim = a.q.dim(2);
    const int64_t n_kv = a.k_cache.n_heads, v_dim = a.v_cache.head_dim;
    const int64_t group = n_heads / n_kv;
    const float* q = a.q.data_as<const float>();
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
            const float s = dot(qh, a.k_cache.row(j) + kv * head_dim, head_dim) * a.scale;
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
            const float* vj = a.v_cache.row(j) + kv * v_dim;
            for (int64_t d = 0; d < v_dim; ++d)
                oh[d] += p * vj[d];
        }
    });
}

}  // namespace tandem::cpu
