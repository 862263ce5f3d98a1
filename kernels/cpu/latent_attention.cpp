#include "kernels/cpu/latent_attention.h"

#include "kernels/cpu/attention_tile.h"
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
    const int64_t row = a.q.dim(2);
    const AttentionProblem problem{
        .q = a.q.data_as<const float>(),
        .out = a.out.data_as<float>(),
        .n_new = a.q.dim(0),
        .n_heads = a.q.dim(1),
        .n_kv_heads = 1,
        .k = {.rows = a.cache, .dim = row},
        .v = {.rows = a.cache, .offset = a.rope_dim, .dim = row - a.rope_dim},
        .start_pos = a.start_pos,
        .scale = a.scale};
    run_attention({&problem, 1}, pool);
}

}  // namespace tandem::cpu
