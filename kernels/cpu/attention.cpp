#include "kernels/cpu/attention.h"

#include <algorithm>
#include <numbers>
#include <vector>

#include "kernels/cpu/attention_tile.h"
#include "kernels/error.h"

namespace tandem::cpu {

extern const AttentionKernels kAttentionScalar;
extern const AttentionKernels kAttentionAvx2;
extern const AttentionKernels kAttentionAvx512;

const AttentionKernels& attention_kernels_for(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::Avx512: return kAttentionAvx512;
        case CpuIsa::Avx2: return kAttentionAvx2;
        case CpuIsa::Scalar: return kAttentionScalar;
    }
    return kAttentionScalar;
}

namespace {

// Query rows per tile: enough to reuse each chunk of keys many times, few enough that the
// tile's queries and outputs (rows x (head_dim + v_head_dim) floats) stay in L2.
constexpr int64_t kTileRows = 64;

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
    if (a.sliding_window < 0) fail("attention: sliding window ", a.sliding_window, " < 0");
}

struct Task {
    AttentionTile tile;
    int64_t cost;  // scores to compute, for ordering
};

// The tiles of one problem: positions in runs of positions_per_tile, heads of each KV head in
// runs of heads_per_tile.
void add_tiles(const AttentionProblem& p, int64_t positions_per_tile, int64_t heads_per_tile,
               std::vector<Task>& tasks) {
    const int64_t group = p.n_heads / p.n_kv_heads;
    const float q_scale = p.scale * std::numbers::log2e_v<float>;
    for (int64_t kv = 0; kv < p.n_kv_heads; ++kv) {
        KvSlice k = p.k, v = p.v;
        k.head = v.head = kv;
        for (int64_t h0 = kv * group; h0 < (kv + 1) * group; h0 += heads_per_tile) {
            const int64_t n_heads = std::min(heads_per_tile, (kv + 1) * group - h0);
            for (int64_t t0 = 0; t0 < p.n_new; t0 += positions_per_tile) {
                const int64_t n_pos = std::min(positions_per_tile, p.n_new - t0);
                const int64_t first = p.start_pos + t0, last = first + n_pos - 1;
                const int64_t first_key =
                    p.window > 0 ? std::max<int64_t>(0, first - p.window + 1) : 0;
                tasks.push_back({.tile = {.q = p.q + (t0 * p.n_heads + h0) * p.k.dim,
                                          .out = p.out + (t0 * p.n_heads + h0) * p.v.dim,
                                          .q_pos_stride = p.n_heads * p.k.dim,
                                          .out_pos_stride = p.n_heads * p.v.dim,
                                          .first_pos = first,
                                          .n_pos = n_pos,
                                          .n_heads = n_heads,
                                          .k = k,
                                          .v = v,
                                          .q_scale = q_scale,
                                          .window = p.window,
                                          .sinks = p.sinks ? p.sinks + h0 : nullptr},
                                 .cost = n_pos * n_heads * (last + 1 - first_key)});
            }
        }
    }
}

}  // namespace

void run_attention(std::span<const AttentionProblem> problems, ThreadPool& pool) {
    // Tiles of about kTileRows rows; when that leaves fewer tiles than twice the threads (one
    // decode token of a model with few KV heads, e.g. latent attention's single one), the query
    // heads of a KV head are split across tiles too, at the price of reading its keys again.
    int64_t n_tiles = 0;
    for (const AttentionProblem& p : problems) {
        const int64_t group = p.n_heads / p.n_kv_heads;
        const int64_t positions = std::max<int64_t>(1, kTileRows / group);
        n_tiles += p.n_kv_heads * ((p.n_new + positions - 1) / positions);
    }
    const int64_t wanted = 2 * int64_t(pool.size());
    const int64_t split =
        n_tiles >= wanted ? 1 : (wanted + n_tiles - 1) / std::max<int64_t>(1, n_tiles);
    std::vector<Task> tasks;
    for (const AttentionProblem& p : problems) {
        if (p.n_new == 0) continue;
        const int64_t group = p.n_heads / p.n_kv_heads;
        const int64_t positions = std::max<int64_t>(1, kTileRows / group);
        const int64_t heads = std::max<int64_t>(1, (group + split - 1) / split);
        add_tiles(p, positions, heads, tasks);
    }
    // Longest first, so the dynamic hand-out ends with short tiles (balance, not results).
    std::stable_sort(tasks.begin(), tasks.end(),
                     [](const Task& a, const Task& b) { return a.cost > b.cost; });
    const AttentionKernels& kernels = attention_kernels_for(active_isa());
    pool.run(int64_t(tasks.size()), [&](int64_t i) {
        const AttentionTile& tile = tasks[size_t(i)].tile;
        thread_local std::vector<float> scratch;
        const auto floats = size_t(attention_scratch_layout(tile).total) + 16;
        if (scratch.size() < floats) scratch.resize(floats);
        // 64-byte alignment for the vector loads of the scratch rows.
        const auto address = reinterpret_cast<uintptr_t>(scratch.data());
        kernels.tile(tile, scratch.data() + (64 - address % 64) % 64 / sizeof(float));
    });
}

void attention(std::span<const AttentionArgs> sequences, ThreadPool& pool) {
    std::vector<AttentionProblem> problems;
    problems.reserve(sequences.size());
    for (const AttentionArgs& a : sequences) {
        check_attention_args(a);
        const int64_t head_dim = a.q.dim(2), v_dim = a.v_cache.head_dim;
        problems.push_back({.q = a.q.data_as<const float>(),
                            .out = a.out.data_as<float>(),
                            .n_new = a.q.dim(0),
                            .n_heads = a.q.dim(1),
                            .n_kv_heads = a.k_cache.n_heads,
                            .k = {.rows = a.k_cache, .dim = head_dim},
                            .v = {.rows = a.v_cache, .dim = v_dim},
                            .start_pos = a.start_pos,
                            .scale = a.scale,
                            .window = a.sliding_window,
                            .sinks = a.sinks});
    }
    run_attention(problems, pool);
}

void attention(const AttentionArgs& args, ThreadPool& pool) {
    attention(std::span<const AttentionArgs>(&args, 1), pool);
}

}  // namespace tandem::cpu
