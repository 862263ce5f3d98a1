// tandem-cuda-attention-bench: the CUDA attention kernel (kernels/cuda/attention.h) against the
// GPU's measured ceilings, in one run of well under a minute.
//
// First it measures a device-to-device copy of 1 GiB (bytes read + written per second: the HBM
// bandwidth the kernel can hope for). Then decode: one new token per sequence at batch 1 and 16,
// contexts 1k, 8k and 32k, 32 query heads / 8 KV heads / head_dim 128, a bf16 paged cache
// (block_size 16, blocks in a shuffled order): achieved GB/s of K and V read, and its ratio to
// the copy, through cuda::attention (which uploads the sequence table), through attention_decode
// with the table already on the device, and that call replayed from a CUDA graph. Then prefill of
// 512 and 4096 tokens from position 0 (causal): TFLOP/s counting 4 x head_dim x n_heads flops per
// visible (query, key) pair. CUDA events around each call, 3 warm-up calls, the median of 25.
//
//   tandem-cuda-attention-bench [--json FILE]
// Without a GPU it says so and exits 0.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/device.h"
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {
namespace {

constexpr int kWarmup = 3;
constexpr int kReps = 25;
constexpr int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlockSize = 16;
const Device kGpu{DeviceKind::Cuda, 0};

// Median milliseconds of `call` on the stream, each rep between two events.
template <class Call>
double median_ms(cudaStream_t stream, Call&& call) {
    cudaEvent_t start, stop;
    TANDEM_CUDA_CHECK(cudaEventCreate(&start));
    TANDEM_CUDA_CHECK(cudaEventCreate(&stop));
    for (int i = 0; i < kWarmup; ++i)
        call();
    std::vector<double> times;
    for (int i = 0; i < kReps; ++i) {
        TANDEM_CUDA_CHECK(cudaEventRecord(start, stream));
        call();
        TANDEM_CUDA_CHECK(cudaEventRecord(stop, stream));
        TANDEM_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        TANDEM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        times.push_back(ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

struct Row {
    std::string name;
    double ms = 0, gbs = 0, tflops = 0, copy_ratio = 0;
};

// A bf16 block pool for `positions` positions per sequence x `batch` sequences, filled with a
// small constant (the values do not change the timing), and a shuffled block table.
struct Pool {
    Buffer k, v, table;
    int64_t blocks_per_seq = 0;
};

Pool make_pool(Stream& stream, int64_t batch, int64_t positions) {
    Pool p;
    p.blocks_per_seq = (positions + kBlockSize - 1) / kBlockSize;
    const int64_t blocks = batch * p.blocks_per_seq;
    const size_t bytes = size_t(blocks * kBlockSize * kKvHeads * kHeadDim * 2);
    p.k = allocate(kGpu, bytes);
    p.v = allocate(kGpu, bytes);
    TANDEM_CUDA_CHECK(cudaMemset(p.k.data(), 0x3c, bytes));
    TANDEM_CUDA_CHECK(cudaMemset(p.v.data(), 0x3c, bytes));
    std::vector<int32_t> table(static_cast<size_t>(blocks));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937_64(7));
    p.table = allocate(kGpu, table.size() * sizeof(int32_t));
    stream.copy_async(p.table.data(), table.data(), table.size() * sizeof(int32_t),
                      CopyDirection::HostToDevice);
    stream.synchronize();
    return p;
}

std::vector<Row> time_attention(cuda::Context& ctx, const std::string& name, int64_t batch,
                                int64_t start, int64_t n_new, double copy_gbs) {
    Stream& stream = ctx.stream();
    const int64_t positions = start + n_new;
    Pool pool = make_pool(stream, batch, positions);
    Buffer q = allocate(kGpu, size_t(batch * n_new * kHeads * kHeadDim * 4));
    Buffer out = allocate(kGpu, size_t(batch * n_new * kHeads * kHeadDim * 4));
    TANDEM_CUDA_CHECK(cudaMemset(q.data(), 0, size_t(batch * n_new * kHeads * kHeadDim * 4)));
    std::vector<cuda::AttentionArgs> args;
    for (int64_t b = 0; b < batch; ++b) {
        const auto* table =
            static_cast<const int32_t*>(pool.table.data()) + b * pool.blocks_per_seq;
        const int64_t capacity = pool.blocks_per_seq * kBlockSize;
        const int64_t offset = b * n_new * kHeads * kHeadDim;
        args.push_back({.q = Tensor(static_cast<float*>(q.data()) + offset, DType::F32,
                                    {n_new, kHeads, kHeadDim}, kGpu),
                        .k_cache = KvRows(pool.k.data(), table, kBlockSize, kKvHeads, kHeadDim,
                                          capacity, DType::BF16),
                        .v_cache = KvRows(pool.v.data(), table, kBlockSize, kKvHeads, kHeadDim,
                                          capacity, DType::BF16),
                        .out = Tensor(static_cast<float*>(out.data()) + offset, DType::F32,
                                      {n_new, kHeads, kHeadDim}, kGpu),
                        .start_pos = start,
                        .scale = 0.08838834764831845f});
    }
    const auto native = static_cast<cudaStream_t>(ctx.native_stream());
    const auto row_of = [&](const std::string& row_name, double ms) {
        Row row{.name = row_name, .ms = ms};
        const double seconds = row.ms * 1e-3;
        // K and V of every visible position, read once per KV head.
        const double kv_bytes = double(batch) * double(positions) * kKvHeads * kHeadDim * 2 * 2;
        row.gbs = kv_bytes / seconds * 1e-9;
        row.copy_ratio = row.gbs / copy_gbs;
        // QK^T and PV over the causal pairs: (start + 1 + ... + start + n_new) keys.
        const double pairs = double(n_new) * double(start) + double(n_new) * double(n_new + 1) / 2;
        row.tflops = double(batch) * pairs * kHeads * kHeadDim * 4 / seconds * 1e-12;
        return row;
    };
    std::vector<Row> rows{row_of(name, median_ms(native, [&] { cuda::attention(ctx, args); }))};
    if (n_new != 1) return rows;

    // Decode as a captured decoder runs it: the sequence table already in device memory
    // (attention_decode), then the same call replayed from a CUDA graph (no launch overhead).
    std::vector<cuda::DecodeSequence> table;
    for (const cuda::AttentionArgs& a : args)
        table.push_back({.k_base = a.k_cache.base,
                         .v_base = a.v_cache.base,
                         .k_blocks = a.k_cache.block_table,
                         .v_blocks = a.v_cache.block_table,
                         .position = a.start_pos});
    Buffer table_dev = allocate(kGpu, table.size() * sizeof(cuda::DecodeSequence));
    stream.copy_async(table_dev.data(), table.data(), table.size() * sizeof(cuda::DecodeSequence),
                      CopyDirection::HostToDevice);
    const cuda::DecodeAttentionArgs decode{
        .q = Tensor(q.data(), DType::F32, {batch, kHeads, kHeadDim}, kGpu),
        .out = Tensor(out.data(), DType::F32, {batch, kHeads, kHeadDim}, kGpu),
        .sequences = static_cast<const cuda::DecodeSequence*>(table_dev.data()),
        .k = cuda::layout_of(args[0].k_cache),
        .v = cuda::layout_of(args[0].v_cache),
        .max_keys = positions,
        .scale = args[0].scale};
    rows.push_back(row_of(name + ", device table",
                          median_ms(native, [&] { cuda::attention_decode(ctx, decode); })));
    cudaGraph_t graph = nullptr;
    TANDEM_CUDA_CHECK(cudaStreamBeginCapture(native, cudaStreamCaptureModeThreadLocal));
    cuda::attention_decode(ctx, decode);
    TANDEM_CUDA_CHECK(cudaStreamEndCapture(native, &graph));
    cudaGraphExec_t exec = nullptr;
    TANDEM_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    rows.push_back(row_of(name + ", graph", median_ms(native, [&] {
                              TANDEM_CUDA_CHECK(cudaGraphLaunch(exec, native));
                          })));
    TANDEM_CUDA_CHECK(cudaGraphExecDestroy(exec));
    TANDEM_CUDA_CHECK(cudaGraphDestroy(graph));
    stream.synchronize();
    return rows;
}

int run(int argc, char** argv) {
    std::string json_path;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json_path = argv[++i];
        } else {
            std::fprintf(stderr, "usage: %s [--json FILE]\n", argv[0]);
            return 2;
        }
    }
    if (!cuda_compiled() || cuda_device_count() == 0) {
        std::printf("tandem-cuda-attention-bench: no CUDA device here; nothing to measure\n");
        return 0;
    }
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    const auto native = static_cast<cudaStream_t>(ctx.native_stream());

    const size_t copy_bytes = size_t(1) << 30;
    Buffer src = allocate(kGpu, copy_bytes), dst = allocate(kGpu, copy_bytes);
    TANDEM_CUDA_CHECK(cudaMemset(src.data(), 1, copy_bytes));
    const double copy_ms = median_ms(native, [&] {
        TANDEM_CUDA_CHECK(
            cudaMemcpyAsync(dst.data(), src.data(), copy_bytes, cudaMemcpyDeviceToDevice, native));
    });
    const double copy_gbs = 2.0 * double(copy_bytes) / (copy_ms * 1e-3) * 1e-9;
    src = Buffer();
    dst = Buffer();

    std::vector<Row> rows;
    const auto add = [&](const std::vector<Row>& more) {
        rows.insert(rows.end(), more.begin(), more.end());
    };
    for (const int64_t batch : {1, 16})
        for (const int64_t context : {1024, 8192, 32768})
            add(time_attention(ctx,
                               "decode batch " + std::to_string(batch) + " context " +
                                   std::to_string(context / 1024) + "k",
                               batch, context - 1, 1, copy_gbs));
    for (const int64_t n : {512, 4096})
        add(time_attention(ctx, "prefill " + std::to_string(n), 1, 0, n, copy_gbs));

    cudaDeviceProp prop{};
    TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("%s: device-to-device copy %.0f GB/s (read + write)\n\n", prop.name, copy_gbs);
    std::printf("| case | ms | KV GB/s | of copy | TFLOP/s |\n|---|---:|---:|---:|---:|\n");
    for (const Row& r : rows)
        std::printf("| %s | %.4f | %.0f | %.0f %% | %.2f |\n", r.name.c_str(), r.ms, r.gbs,
                    100 * r.copy_ratio, r.tflops);
    if (!json_path.empty()) {
        std::ofstream json(json_path);
        json << "{\"device\": \"" << prop.name << "\", \"copy_gbs\": " << copy_gbs
             << ", \"heads\": " << kHeads << ", \"kv_heads\": " << kKvHeads
             << ", \"head_dim\": " << kHeadDim << ", \"kv_type\": \"bf16\", \"cases\": [";
        for (size_t i = 0; i < rows.size(); ++i)
            json << (i ? ", " : "") << "{\"name\": \"" << rows[i].name
                 << "\", \"ms\": " << rows[i].ms << ", \"kv_gbs\": " << rows[i].gbs
                 << ", \"copy_ratio\": " << rows[i].copy_ratio << ", \"tflops\": " << rows[i].tflops
                 << "}";
        json << "]}\n";
        if (!json) fail("cannot write ", json_path);
    }
    return 0;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
    try {
        return tandem::run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-cuda-attention-bench: %s\n", e.what());
        return 1;
    }
}
