// GPU attention (kernels/cuda/attention.h) against cpu::attention, and write_kv against
// write_rows, on fresh random inputs: paged caches with a shuffled block table (block_size 16)
// of f32/f16/bf16 rows, contexts from 1 to 4096, decode and chunked prefill (start_pos > 0),
// GQA groups 1/4/8, head_dim 64/80/128, v_head_dim != head_dim, sliding windows and several
// sequences per call (so decode takes the split-K path and prefill the tile path). Outputs are
// poisoned, so every element must be written. Skips where no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "cache/kv_cache.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/error.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using test::kGpu;
using test::random_floats;

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 4, .pin = false});
    return instance;
}

constexpr int64_t kBlockSize = 16;

// One sequence's paged K and V caches on the host and the same bytes on the device.
struct PagedCache {
    int64_t capacity = 0, n_kv_heads = 0, head_dim = 0, v_dim = 0;
    DType dtype = DType::F32;
    std::vector<int32_t> table;
    std::vector<uint8_t> k_host, v_host;
    OwnedTensor k_dev, v_dev, table_dev;

    KvRows rows(bool device, bool values) const {
        const int64_t dim = values ? v_dim : head_dim;
        void* base = device ? (values ? v_dev->data() : k_dev->data())
                            : const_cast<uint8_t*>(values ? v_host.data() : k_host.data());
        const auto* t = device ? table_dev->data_as<const int32_t>() : table.data();
        return KvRows(base, t, kBlockSize, n_kv_heads, dim, capacity, dtype);
    }
};

// A cache of `length` positions filled with normal values (written with write_rows), blocks in
// a shuffled order with a spare block or two so block ids are not 0..n-1.
PagedCache make_cache(std::mt19937_64& rng, int64_t length, int64_t n_kv_heads, int64_t head_dim,
                      int64_t v_dim, DType dtype, Stream& stream) {
    PagedCache c{.capacity = (length + kBlockSize - 1) / kBlockSize * kBlockSize,
                 .n_kv_heads = n_kv_heads,
                 .head_dim = head_dim,
                 .v_dim = v_dim,
                 .dtype = dtype};
    const int64_t n_blocks = c.capacity / kBlockSize, pool_blocks = n_blocks + 2;
    std::vector<int32_t> ids(static_cast<size_t>(pool_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    c.table.assign(ids.begin(), ids.begin() + n_blocks);
    const int64_t element = dtype == DType::F32 ? 4 : 2;
    c.k_host.assign(size_t(pool_blocks * kBlockSize * n_kv_heads * head_dim * element), 0);
    c.v_host.assign(size_t(pool_blocks * kBlockSize * n_kv_heads * v_dim * element), 0);
    const std::vector<float> k = random_floats(rng, size_t(length * n_kv_heads * head_dim));
    const std::vector<float> v = random_floats(rng, size_t(length * n_kv_heads * v_dim));
    write_rows(c.rows(false, false), 0, k.data(), length);
    write_rows(c.rows(false, true), 0, v.data(), length);
    c.k_dev = test::upload(c.k_host, DType::I32, {int64_t(c.k_host.size() / 4)}, stream);
    c.v_dev = test::upload(c.v_host, DType::I32, {int64_t(c.v_host.size() / 4)}, stream);
    c.table_dev = test::upload(c.table, DType::I32, {n_blocks}, stream);
    return c;
}

struct SequenceCase {
    int64_t start_pos, n_new;
};

struct AttentionCase {
    int64_t n_heads, n_kv_heads, head_dim, v_dim;
    DType dtype;
    int64_t window;
    std::vector<SequenceCase> sequences;
};

std::string describe(const AttentionCase& c) {
    std::string s = "heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) +
                    " head_dim " + std::to_string(c.head_dim) + " v_dim " +
                    std::to_string(c.v_dim) + " " + std::string(dtype_name(c.dtype)) + " window " +
                    std::to_string(c.window) + " sequences";
    for (const SequenceCase& q : c.sequences)
        s += " (start " + std::to_string(q.start_pos) + ", new " + std::to_string(q.n_new) + ")";
    return s;
}

void check_attention(const AttentionCase& c, uint64_t seed) {
    SCOPED_TRACE(describe(c));
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    std::vector<PagedCache> caches;
    std::vector<std::vector<float>> queries, want;
    std::vector<OwnedTensor> q_dev, out_dev;
    std::vector<cpu::AttentionArgs> cpu_args;
    std::vector<cuda::AttentionArgs> gpu_args;
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    for (const SequenceCase& s : c.sequences) {
        const int64_t length = s.start_pos + s.n_new;
        caches.push_back(
            make_cache(rng, length, c.n_kv_heads, c.head_dim, c.v_dim, c.dtype, *stream));
        queries.push_back(random_floats(rng, size_t(s.n_new * c.n_heads * c.head_dim)));
        want.emplace_back(size_t(s.n_new * c.n_heads * c.v_dim), NAN);
    }
    for (size_t i = 0; i < c.sequences.size(); ++i) {
        const SequenceCase& s = c.sequences[i];
        const Shape q_shape{s.n_new, c.n_heads, c.head_dim}, out_shape{s.n_new, c.n_heads, c.v_dim};
        cpu_args.push_back({.q = Tensor(queries[i].data(), DType::F32, q_shape),
                            .k_cache = caches[i].rows(false, false),
                            .v_cache = caches[i].rows(false, true),
                            .out = Tensor(want[i].data(), DType::F32, out_shape),
                            .start_pos = s.start_pos,
                            .scale = scale,
                            .sliding_window = c.window});
        q_dev.push_back(test::upload(queries[i], DType::F32, q_shape, *stream));
        out_dev.push_back(test::poisoned(DType::F32, out_shape, *stream));
        gpu_args.push_back({.q = *q_dev.back(),
                            .k_cache = caches[i].rows(true, false),
                            .v_cache = caches[i].rows(true, true),
                            .out = *out_dev.back(),
                            .start_pos = s.start_pos,
                            .scale = scale,
                            .sliding_window = c.window});
    }
    cpu::attention(cpu_args, pool());
    cuda::attention(ctx, gpu_args);
    for (size_t i = 0; i < c.sequences.size(); ++i) {
        const std::vector<float> got = test::download<float>(*out_dev[i], *stream);
        // Decode and the CUDA-core tile kernel: both sides are f32 over the same stored K/V
        // values; they differ in the order of the sums and in exp2 (the device's is within 2
        // ulp): ~1e-6 of the output scale, bounded at 1e-4 so a real indexing or masking bug
        // (errors ~0.1-1) cannot hide. The tensor-core prefill kernel (f16/bf16 caches, every
        // sequence n_new >= 2, dims multiples of 16 up to 128) rounds Q, K, P and V to bf16, 2^-9
        // relative each: a score of unit scale moves by ~2^-8, a softmax weight by ~0.4 %, so the
        // output (a weighted mean of values of unit scale) by a few 1e-3 of its scale; bounded at
        // 2e-2, still far below what a masking or indexing bug gives.
        bool tensor_cores = c.dtype != DType::F32;  // an f32 cache keeps the f32 kernel
        for (const SequenceCase& q : c.sequences)
            tensor_cores = tensor_cores && q.n_new >= 2;
        for (const int64_t d : {c.head_dim, c.v_dim})
            tensor_cores = tensor_cores && d % 16 == 0 && d <= 128;
        const double bound = tensor_cores ? 2e-2 : 1e-4;
        const double error = test::max_rel_error(got, want[i]);
        if (error > bound) {
            size_t worst = 0;
            for (size_t j = 0; j < got.size(); ++j)
                if (!(std::fabs(got[j] - want[i][j]) <= std::fabs(got[worst] - want[i][worst])))
                    worst = j;
            const int64_t row = int64_t(worst) / c.v_dim;
            ADD_FAILURE() << "sequence " << i << ": max rel error " << error << " at element "
                          << worst << " (token " << row / c.n_heads << ", head " << row % c.n_heads
                          << ", dim " << int64_t(worst) % c.v_dim << "): got " << got[worst]
                          << ", want " << want[i][worst] << " (bound " << bound << ", seed " << seed
                          << ")";
        }
    }
}

TEST(CudaAttention, MatchesCpuAttentionOnPagedCaches) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    const std::vector<AttentionCase> cases = {
        // Decode, one sequence, contexts 1..4096 (split-K from a few hundred keys on).
        {32, 8, 128, 128, DType::BF16, 0, {{0, 1}}},
        {32, 8, 128, 128, DType::BF16, 0, {{16, 1}}},
        {32, 8, 128, 128, DType::F16, 0, {{254, 1}}},
        {32, 8, 128, 128, DType::F32, 0, {{4095, 1}}},
        {8, 8, 64, 64, DType::BF16, 0, {{4095, 1}}},
        {16, 2, 80, 80, DType::F16, 0, {{1999, 1}}},
        // A batch of decodes of different lengths in one call.
        {32, 8, 128, 128, DType::BF16, 0, {{0, 1}, {16, 1}, {254, 1}, {1023, 1}, {4095, 1}}},
        // Chunked prefill: start_pos > 0, n_new 7 / 64 / 300.
        {32, 8, 128, 128, DType::BF16, 0, {{17, 7}}},
        {16, 2, 64, 64, DType::F32, 0, {{100, 64}}},
        {8, 8, 80, 80, DType::F16, 0, {{255, 300}}},
        {32, 8, 128, 128, DType::BF16, 0, {{3796, 300}}},
        // Prefill from position 0, mixed with decodes in one call.
        {32, 8, 64, 64, DType::BF16, 0, {{0, 300}, {1000, 1}, {40, 7}}},
        // Sliding windows shorter and longer than the context.
        {32, 8, 128, 128, DType::BF16, 128, {{4000, 1}, {500, 64}}},
        {16, 2, 64, 64, DType::F16, 37, {{300, 7}, {0, 17}}},
        {8, 8, 64, 64, DType::F32, 5000, {{2000, 1}}},
        // Tensor-core prefill: a window, GQA 12 (60-row tiles), a prime n_new, f32 and f16
        // caches, two sequences of different lengths.
        {32, 8, 128, 128, DType::BF16, 128, {{500, 64}, {0, 300}}},
        {24, 2, 64, 64, DType::F32, 0, {{10, 67}}},
        {16, 4, 96, 96, DType::F16, 0, {{0, 131}, {64, 2}}},
        {32, 8, 64, 128, DType::BF16, 0, {{1000, 97}}},
        // v_head_dim different from head_dim, and the largest head_dim.
        {16, 2, 96, 64, DType::BF16, 0, {{700, 1}, {33, 64}}},
        {8, 2, 256, 256, DType::BF16, 0, {{3000, 1}, {100, 40}}},
    };
    for (size_t i = 0; i < cases.size(); ++i)
        check_attention(cases[i], seed + i);
}

TEST(CudaAttention, RefusesBadArguments) {
    TANDEM_REQUIRE_GPU();
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    std::mt19937_64 rng(1);
    PagedCache cache = make_cache(rng, 32, 2, 64, 64, DType::BF16, *stream);
    OwnedTensor q = test::poisoned(DType::F32, {1, 6, 64}, *stream);
    OwnedTensor out = test::poisoned(DType::F32, {1, 6, 64}, *stream);
    cuda::AttentionArgs args{.q = *q,
                             .k_cache = cache.rows(true, false),
                             .v_cache = cache.rows(true, true),
                             .out = *out,
                             .start_pos = 40};
    EXPECT_THROW(cuda::attention(ctx, {&args, 1}), Error);  // past the capacity
    args.start_pos = 0;
    OwnedTensor q5 = test::poisoned(DType::F32, {1, 5, 64}, *stream);
    args.q = *q5;
    EXPECT_THROW(cuda::attention(ctx, {&args, 1}), Error);  // 5 heads over 2 KV heads
    std::vector<float> host_q(6 * 64);
    args.q = Tensor(host_q.data(), DType::F32, {1, 6, 64});
    EXPECT_THROW(cuda::attention(ctx, {&args, 1}), Error);  // host memory
}

// cuda::attention_decode with the sequence table in device memory, as a decoder captured in a
// CUDA graph calls it: once directly, then captured in a graph and replayed after the table's
// positions changed (each sequence attends to fewer keys), both against cpu::attention.
void check_decode(const AttentionCase& c, uint64_t seed) {
    SCOPED_TRACE("attention_decode: " + describe(c) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    const auto batch = int64_t(c.sequences.size());
    std::vector<PagedCache> caches;
    int64_t max_keys = 1;
    for (const SequenceCase& s : c.sequences) {
        caches.push_back(
            make_cache(rng, s.start_pos + 1, c.n_kv_heads, c.head_dim, c.v_dim, c.dtype, *stream));
        max_keys = std::max(max_keys, s.start_pos + 1);
    }
    const std::vector<float> q = random_floats(rng, size_t(batch * c.n_heads * c.head_dim));
    OwnedTensor q_dev = test::upload(q, DType::F32, {batch, c.n_heads, c.head_dim}, *stream);
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    // The CPU's answer and the GPU's table for positions `positions`.
    const auto expect = [&](const std::vector<int64_t>& positions) {
        std::vector<float> want(size_t(batch * c.n_heads * c.v_dim), NAN);
        std::vector<cpu::AttentionArgs> args;
        for (int64_t b = 0; b < batch; ++b)
            args.push_back({.q = Tensor(const_cast<float*>(q.data()) + b * c.n_heads * c.head_dim,
                                        DType::F32, {1, c.n_heads, c.head_dim}),
                            .k_cache = caches[size_t(b)].rows(false, false),
                            .v_cache = caches[size_t(b)].rows(false, true),
                            .out = Tensor(want.data() + b * c.n_heads * c.v_dim, DType::F32,
                                          {1, c.n_heads, c.v_dim}),
                            .start_pos = positions[size_t(b)],
                            .scale = scale,
                            .sliding_window = c.window});
        cpu::attention(args, pool());
        return want;
    };
    const auto table_of = [&](const std::vector<int64_t>& positions) {
        std::vector<cuda::DecodeSequence> table;
        for (int64_t b = 0; b < batch; ++b) {
            const KvRows k = caches[size_t(b)].rows(true, false);
            const KvRows v = caches[size_t(b)].rows(true, true);
            table.push_back({.k_base = k.base,
                             .v_base = v.base,
                             .k_blocks = k.block_table,
                             .v_blocks = v.block_table,
                             .position = positions[size_t(b)]});
        }
        return table;
    };
    const auto compare = [&](const Tensor& out, const std::vector<float>& want, const char* what) {
        const std::vector<float> got = test::download<float>(out, *stream);
        // As the tile kernel's bound (MatchesCpuAttentionOnPagedCaches): f32 in another order.
        const double error = test::max_rel_error(got, want);
        if (error <= 1e-4) return;
        size_t worst = 0;
        for (size_t j = 0; j < got.size(); ++j)
            if (!(std::fabs(got[j] - want[j]) <= std::fabs(got[worst] - want[worst]))) worst = j;
        const int64_t row = int64_t(worst) / c.v_dim;
        ADD_FAILURE() << what << ": max rel error " << error << " at element " << worst
                      << " (sequence " << row / c.n_heads << ", head " << row % c.n_heads
                      << ", dim " << int64_t(worst) % c.v_dim << "): got " << got[worst]
                      << ", want " << want[worst];
    };
    std::vector<int64_t> positions;
    for (const SequenceCase& s : c.sequences)
        positions.push_back(s.start_pos);
    std::vector<cuda::DecodeSequence> table = table_of(positions);
    // The table as int64 words (48 bytes a row).
    static_assert(sizeof(cuda::DecodeSequence) % 8 == 0);
    OwnedTensor table_dev =
        test::upload_bytes(table.data(), table.size() * sizeof(table[0]), DType::I64,
                           {int64_t(table.size() * sizeof(table[0]) / 8)}, *stream);
    OwnedTensor out = test::poisoned(DType::F32, {batch, c.n_heads, c.v_dim}, *stream);
    const cuda::DecodeAttentionArgs args{
        .q = *q_dev,
        .out = *out,
        .sequences = table_dev->data_as<const cuda::DecodeSequence>(),
        .k = cuda::layout_of(caches[0].rows(true, false)),
        .v = cuda::layout_of(caches[0].rows(true, true)),
        .max_keys = max_keys,
        .scale = scale,
        .sliding_window = c.window};
    ASSERT_TRUE(cuda::decode_supported(args));
    cuda::attention_decode(ctx, args);
    compare(*out, expect(positions), "direct call");

    // Captured once, replayed with other positions written into the same table.
    const auto native = static_cast<cudaStream_t>(ctx.native_stream());
    OwnedTensor out2 = test::poisoned(DType::F32, {batch, c.n_heads, c.v_dim}, *stream);
    cuda::DecodeAttentionArgs captured = args;
    captured.out = *out2;
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(native, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    cuda::attention_decode(ctx, captured);
    ASSERT_EQ(cudaStreamEndCapture(native, &graph), cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int64_t& p : positions)
        p = p * 2 / 3;
    table = table_of(positions);
    ASSERT_EQ(cudaMemcpyAsync(table_dev->data(), table.data(), table.size() * sizeof(table[0]),
                              cudaMemcpyHostToDevice, native),
              cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, native), cudaSuccess);
    stream->synchronize();
    compare(*out2, expect(positions), "graph replay");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
}

TEST(CudaAttention, DecodeWithDeviceTableAndGraphReplayMatchesCpuAttention) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    const std::vector<AttentionCase> cases = {
        // The bench's shape, contexts 1..4096 in one batch (one split to dozens).
        {32, 8, 128, 128, DType::BF16, 0, {{0, 1}, {16, 1}, {254, 1}, {1023, 1}, {4095, 1}}},
        // Group 12: two head tiles per KV head, the second partly empty; v_dim != head_dim.
        {24, 2, 96, 64, DType::F16, 0, {{700, 1}, {5, 1}}},
        // f32 rows of 256: two 16-byte loads per lane; a sliding window.
        {8, 2, 256, 256, DType::F32, 300, {{3000, 1}, {100, 1}}},
        // No GQA, head_dim 64 (8 lanes per row), a window shorter than a split.
        {8, 8, 64, 64, DType::BF16, 37, {{2000, 1}}},
        // One sequence, 16k keys: kDecodeMaxSplitKeys bounds the splits.
        {4, 1, 128, 128, DType::BF16, 0, {{16383, 1}}},
    };
    for (size_t i = 0; i < cases.size(); ++i)
        check_decode(cases[i], seed + i);
}

TEST(CudaWriteKv, MatchesWriteRowsBitForBit) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
        for (const auto& [start, n] : {std::pair<int64_t, int64_t>{0, 1}, {5, 30}, {47, 1}}) {
            SCOPED_TRACE(std::string(dtype_name(dtype)) + " start " + std::to_string(start) +
                         " n " + std::to_string(n));
            const int64_t n_heads = 3, head_dim = 40;
            PagedCache c = make_cache(rng, 48, n_heads, head_dim, head_dim, dtype, *stream);
            // Values across f16's range, its subnormals and overflow included.
            std::vector<float> src = random_floats(rng, size_t(n * n_heads * head_dim), 3.0f);
            for (size_t i = 0; i < src.size(); i += 7)
                src[i] *= (i % 2 ? 3e4f : 1e-6f);
            OwnedTensor src_dev = test::upload(src, DType::F32, {n, n_heads * head_dim}, *stream);
            write_rows(c.rows(false, false), start, src.data(), n);
            cuda::write_kv(ctx, c.rows(true, false), start, *src_dev);
            const std::vector<uint8_t> got = test::download_bytes(*c.k_dev, *stream);
            ASSERT_EQ(got.size(), c.k_host.size());
            for (size_t i = 0; i < got.size(); ++i)
                ASSERT_EQ(got[i], c.k_host[i]) << "byte " << i << " of the block pool";
        }
    }
}

}  // namespace
}  // namespace tandem
