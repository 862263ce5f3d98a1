// tandem-kernel-bench: the CPU expert and attention kernels against the machine's own ceilings,
// in one run.
//
// First it measures the memory bandwidth (a read-only stream over 1 GiB, plus a STREAM triad) and
// the peak FMA rate (independent FMA chains on every thread); then it times the fused MoE kernel
// (cpu::moe_experts) for one layer step at real expert shapes: every token routed to the same top-k
// experts, M tokens per expert, weights of each type. Expert sets rotate through a pool of at least
// 512 MB so that weights come from DRAM, as in decode. The attention cases (attention/...) time
// cpu::attention at a real GQA shape per KV cache type: prefill of n tokens and one decode token
// at a long context, whose caches rotate through 256 MB likewise; `per_position` is the kernel
// before blocked prefill (each query position streams all its keys), kept here for comparison.
// Where the tile path (kernels/cpu/tile_gemm.h) can run, each expert case with M > 1 runs twice,
// path:dot (the dot-product kernels) and path:tile, side by side: the thresholds of
// tile_gemm_min_tokens come from these pairs. linear/... cases do the same for dense
// projections (Qwen3-30B-A3B's q_proj, OLMoE's o_proj) at M = 16, 64, 512.
//
//   tandem-kernel-bench                 # markdown-ish table (Google Benchmark console output)
//   tandem-kernel-bench --json          # one JSON object per case, then the machine line
//   tandem-kernel-bench --full          # all shapes x types x M (minutes); default is a subset
//   tandem-kernel-bench --cpu-isa avx2  # a lower ISA level than the CPU's (e.g. the int8 tiles)
// Google Benchmark flags (--benchmark_filter, --benchmark_repetitions, ...) pass through.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bench/machine.h"
#include "cache/kv_cache.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/expert_ffn.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/cpu/vec_dot.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace {

using namespace tandem;

ThreadPool& pool() {
    static ThreadPool instance;
    return instance;
}

// ---- machine ceilings (bench/machine.h) -------------------------------------------------

double g_bandwidth_gbps = 0, g_peak_gflops = 0;
// Printed beside the read-only stream for comparison with STREAM figures.
double g_triad_gbps = 0;

// ---- the expert kernel -----------------------------------------------------------------------

struct ExpertShape {
    const char* model;
    int64_t hidden, ffn, top_k;
};
const ExpertShape kShapes[] = {{"mixtral-8x7b", 4096, 14336, 2},
                               {"qwen3-30b-a3b", 2048, 768, 8},
                               {"deepseek-v2-lite", 2048, 1408, 6},
                               {"olmoe-1b-7b", 2048, 1024, 8},
                               {"gpt-oss-20b", 2880, 2880, 4}};

// Random weights of any type: random bytes, with every block's f16 scales set to small finite
// values (quantizing real data would take minutes for the larger shapes and changes nothing).
OwnedTensor random_matrix(DType type, int64_t rows, int64_t cols, std::mt19937_64& rng) {
    OwnedTensor t = make_tensor(type, {rows, cols});
    auto* bytes = t.view.data_as<uint8_t>();
    const int64_t n = t.view.bytes();
    for (int64_t i = 0; i + 8 <= n; i += 8) {
        const uint64_t r = rng();
        std::memcpy(bytes + i, &r, 8);
    }
    const uint16_t scale = f32_to_f16(0.01f);
    const int64_t block_bytes = dtype_block_bytes(type);
    if (type == DType::BF16) {
        auto* v = reinterpret_cast<uint16_t*>(bytes);
        for (int64_t i = 0; i < n / 2; ++i)
            v[i] = f32_to_bf16(float(int(v[i] % 2001) - 1000) * 1e-5f);
    } else if (type == DType::MXFP4) {  // the e8m0 byte leads: 2^-7 times e2m1 values
        for (int64_t b = 0; b < n / block_bytes; ++b)
            bytes[b * block_bytes] = 120;
    } else if (type == DType::Q6_K) {
        for (int64_t b = 0; b < n / block_bytes; ++b)
            std::memcpy(bytes + b * block_bytes + 208, &scale, 2);
    } else {  // d (and dmin) lead the block
        for (int64_t b = 0; b < n / block_bytes; ++b) {
            std::memcpy(bytes + b * block_bytes, &scale, 2);
            if (type == DType::Q4_K || type == DType::Q5_K)
                std::memcpy(bytes + b * block_bytes + 2, &scale, 2);
        }
    }
    return t;
}

struct ExpertPool {
    std::vector<OwnedTensor> storage;
    std::vector<cpu::ExpertWeights> experts;
    int64_t set_bytes = 0;  // weights of top_k experts
};

ExpertPool make_pool(const ExpertShape& s, DType type) {
    ExpertPool p;
    std::mt19937_64 rng(1);
    const int64_t expert_bytes =
        3 * s.hidden * s.ffn / dtype_block_size(type) * dtype_block_bytes(type);
    p.set_bytes = expert_bytes * s.top_k;
    const int64_t sets = std::max<int64_t>(1, (int64_t(512) << 20) / p.set_bytes);
    for (int64_t e = 0; e < sets * s.top_k; ++e) {
        p.storage.push_back(random_matrix(type, s.ffn, s.hidden, rng));
        p.storage.push_back(random_matrix(type, s.ffn, s.hidden, rng));
        p.storage.push_back(random_matrix(type, s.hidden, s.ffn, rng));
        const size_t n = p.storage.size();
        p.experts.push_back({p.storage[n - 3].view, p.storage[n - 2].view, p.storage[n - 1].view});
    }
    return p;
}

int64_t w_bytes(DType type, int64_t rows, int64_t k) {
    return rows * row_bytes(type, k);
}

struct CaseInfo {
    std::string fields;  // the case's own JSON fields, "\"kernel\":...,"
    double bytes, flops;
};
std::map<std::string, CaseInfo> g_cases;

// Which path a case forces: the dot-product kernels, the tile path (tile_gemm.h: bf16 tiles at
// avx512, int8 tiles at avx2), or
// whatever the engine's policy picks (auto).
// invariant: the batch-invariant kernels (one token per pass, no several-row dots), the
// baseline of one-token products.
// tile_novnni: the tile path with AVX-VNNI off (the avx2 int8 tiles' vpmaddubsw variant), run
// next to path:tile where the avx2 level is active and the CPU has AVX-VNNI.
// auto_novnni: auto with AVX-VNNI off (the avx2 several-row dots' vpmaddubsw variant).
enum class Path { Auto, Dot, Tile, Invariant, TileNoVnni, AutoNoVnni };
const char* path_name(Path p) {
    return p == Path::Dot          ? "dot"
           : p == Path::Tile       ? "tile"
           : p == Path::Invariant  ? "invariant"
           : p == Path::TileNoVnni ? "tile_novnni"
           : p == Path::AutoNoVnni ? "auto_novnni"
                                   : "auto";
}

// Sets the tile policy for one case and restores Auto after it.
struct ForcePath {
    explicit ForcePath(Path p) {
        cpu::set_tile_gemm_policy(p == Path::Dot ? cpu::TileGemmPolicy::Never
                                  : p == Path::Tile || p == Path::TileNoVnni
                                      ? cpu::TileGemmPolicy::Always
                                      : cpu::TileGemmPolicy::Auto);
        cpu::set_batch_invariant_kernels(p == Path::Invariant);
        if (p == Path::TileNoVnni || p == Path::AutoNoVnni) cpu::force_avx_vnni(false);
    }
    ~ForcePath() {
        cpu::set_tile_gemm_policy(cpu::TileGemmPolicy::Auto);
        cpu::set_batch_invariant_kernels(false);
        cpu::force_avx_vnni(std::nullopt);
    }
};

// Whether the avx2 level runs with AVX-VNNI (its int8 tiles and several-row MXFP4 dots; then
// they also run without it).
bool int8_tiles_with_vnni() {
    return cpu::active_isa() == cpu::CpuIsa::Avx2 && cpu::avx_vnni_active();
}

void bench_moe(benchmark::State& state, ExpertShape s, DType type, int64_t m, Path path) {
    const ForcePath force(path);
    static std::map<std::pair<std::string, int>, ExpertPool> pools;  // reused across M
    ExpertPool& p = pools.try_emplace({s.model, int(type)}, make_pool(s, type)).first->second;
    const int64_t n_sets = int64_t(p.experts.size()) / s.top_k;
    // m tokens, each routed to experts [set * top_k, (set + 1) * top_k).
    OwnedTensor x = make_tensor(DType::F32, {m, s.hidden}),
                out = make_tensor(DType::F32, {m, s.hidden});
    std::mt19937_64 rng(2);
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < m * s.hidden; ++i)
        x.view.data_as<float>()[i] = normal(rng);
    std::vector<int32_t> tokens(size_t(m * s.top_k));
    std::vector<float> weights(tokens.size(), 1.0f / float(s.top_k));
    for (int64_t j = 0; j < s.top_k; ++j)
        for (int64_t t = 0; t < m; ++t)
            tokens[size_t(j * m + t)] = int32_t(t);
    int64_t set = 0;
    for (auto _ : state) {
        std::vector<int32_t> offsets(p.experts.size() + 1, 0);
        for (size_t e = 0; e < p.experts.size(); ++e) {
            const bool active = int64_t(e) / s.top_k == set;
            offsets[e + 1] = offsets[e] + (active ? int32_t(m) : 0);
        }
        cpu::moe_experts({.x = x.view,
                          .out = out.view,
                          .experts = p.experts,
                          .offsets = offsets,
                          .token_index = tokens,
                          .token_weight = weights,
                          .skip = {}},
                         pool());
        set = (set + 1) % n_sets;
    }
    const double bytes = double(p.set_bytes),
                 flops = 2.0 * 3 * double(s.hidden * s.ffn * m * s.top_k);
    state.counters["GB/s"] = benchmark::Counter(
        bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
    state.counters["GFLOP/s"] = benchmark::Counter(
        flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void register_moe(const ExpertShape& s, DType type, int64_t m, Path path) {
    const std::string name = std::string("moe/") + s.model + "/" + std::string(dtype_name(type)) +
                             "/m:" + std::to_string(m) + "/path:" + path_name(path);
    benchmark::RegisterBenchmark(name.c_str(), bench_moe, s, type, m, path)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    const double bytes =
        3.0 * double(s.hidden * s.ffn / dtype_block_size(type) * dtype_block_bytes(type) * s.top_k);
    const double flops = 2.0 * 3 * double(s.hidden * s.ffn * m * s.top_k);
    char fields[256];
    std::snprintf(fields, sizeof(fields),
                  "\"kernel\":\"moe_experts\",\"model\":\"%s\",\"dtype\":\"%s\",\"path\":\"%s\","
                  "\"m\":%lld,\"n\":%lld,\"k\":%lld,\"experts\":%lld,",
                  s.model, std::string(dtype_name(type)).c_str(), path_name(path), (long long)m,
                  (long long)s.ffn, (long long)s.hidden, (long long)s.top_k);
    g_cases[name + "/real_time"] = {fields, bytes, flops};
}

// ---- dense projections (cpu::linear): attention's and the lm_head's shape class ----------------

struct LinearShape {
    const char* name;
    int64_t rows, k;
};
// Qwen3-30B-A3B's q_proj (32 heads x 128 from hidden 2048) and OLMoE's o_proj.
const LinearShape kLinearShapes[] = {{"qwen3-30b-a3b-q_proj", 4096, 2048},
                                     {"olmoe-1b-7b-o_proj", 2048, 2048}};

void bench_linear(benchmark::State& state, LinearShape s, DType type, int64_t m, Path path) {
    const ForcePath force(path);
    std::mt19937_64 rng(3);
    const OwnedTensor w = random_matrix(type, s.rows, s.k, rng);
    OwnedTensor x = make_tensor(DType::F32, {m, s.k}), y = make_tensor(DType::F32, {m, s.rows});
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < m * s.k; ++i)
        x.view.data_as<float>()[i] = normal(rng);
    for (auto _ : state)
        cpu::linear(x.view, w.view, Tensor(), y.view, pool());
    state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(m * s.rows * s.k),
                                                   benchmark::Counter::kIsIterationInvariantRate,
                                                   benchmark::Counter::kIs1000);
}

void register_linear(const LinearShape& s, DType type, int64_t m, Path path) {
    const std::string name = std::string("linear/") + s.name + "/" + std::string(dtype_name(type)) +
                             "/m:" + std::to_string(m) + "/path:" + path_name(path);
    benchmark::RegisterBenchmark(name.c_str(), bench_linear, s, type, m, path)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    char fields[256];
    std::snprintf(fields, sizeof(fields),
                  "\"kernel\":\"linear\",\"model\":\"%s\",\"dtype\":\"%s\",\"path\":\"%s\","
                  "\"m\":%lld,\"n\":%lld,\"k\":%lld,",
                  s.name, std::string(dtype_name(type)).c_str(), path_name(path), (long long)m,
                  (long long)s.rows, (long long)s.k);
    // The weights stay in cache across iterations at these sizes: bytes are the matrix once.
    g_cases[name + "/real_time"] = {fields, double(w_bytes(type, s.rows, s.k)),
                                    2.0 * double(m * s.rows * s.k)};
}

// ---- attention -------------------------------------------------------------------------------

struct AttentionShape {
    const char* model;
    int64_t n_heads, n_kv_heads, head_dim;
};
const AttentionShape kAttentionShapes[] = {{"qwen3-30b-a3b", 32, 4, 128},
                                           {"olmoe-1b-7b", 16, 16, 128}};

// The attention kernel as it was before blocked prefill (d2a1060), f32 rows only: every
// (position, head) streams all its keys with one dot product and one std::exp per score.
void per_position_attention(const cpu::AttentionArgs& a, ThreadPool& pool) {
    const int64_t n_new = a.q.dim(0), n_heads = a.q.dim(1), head_dim = a.q.dim(2);
    const int64_t group = n_heads / a.k_cache.n_heads, v_dim = a.v_cache.head_dim;
    const float* q = a.q.data_as<const float>();
    float* out = a.out.data_as<float>();
    const cpu::RowDotFn dot = cpu::vec_dot_kernels().dot_f32;
    auto row = [](const KvRows& rows, int64_t pos, int64_t head) {
        return reinterpret_cast<const float*>(rows.at(pos, head));
    };
    pool.run(n_new * n_heads, [&](int64_t task) {
        const int64_t t = task / n_heads, h = task % n_heads, kv = h / group;
        const int64_t pos = a.start_pos + t;
        const float* qh = q + (t * n_heads + h) * head_dim;
        thread_local std::vector<float> scores;
        scores.resize(size_t(pos + 1));
        float max_score = -INFINITY;
        for (int64_t j = 0; j <= pos; ++j) {
            scores[size_t(j)] = dot(qh, row(a.k_cache, j, kv), head_dim) * a.scale;
            max_score = std::max(max_score, scores[size_t(j)]);
        }
        float total = 0.0f;
        for (float& s : scores)
            total += s = std::exp(s - max_score);
        float* oh = out + (t * n_heads + h) * v_dim;
        std::fill(oh, oh + v_dim, 0.0f);
        for (int64_t j = 0; j <= pos; ++j) {
            const float p = scores[size_t(j)] / total;
            const float* vj = row(a.v_cache, j, kv);
            for (int64_t d = 0; d < v_dim; ++d)
                oh[d] += p * vj[d];
        }
    });
}

// Which kernel on which cache: the blocked kernel on pool blocks as the engine has them
// ([heads, 16 positions, head_dim] each), the same kernel on position-major rows (the pool's
// layout before it, still what a contiguous tensor gives), and the per-position kernel on
// position-major rows, i.e. the attention before this kernel.
enum class AttentionImpl { Blocked, BlockedPositionMajor, PerPosition };

const char* impl_name(AttentionImpl impl) {
    switch (impl) {
        case AttentionImpl::Blocked: return "blocked";
        case AttentionImpl::BlockedPositionMajor: return "blocked_position_major";
        case AttentionImpl::PerPosition: return "per_position";
    }
    return "?";
}

// Keys and values of `context` positions, in either layout.
struct AttentionCache {
    std::unique_ptr<KvCache> paged;
    OwnedTensor keys, values;  // position-major: [context, n_kv_heads, head_dim]
    KvRows k() const { return paged ? paged->keys(0) : KvRows(keys.view); }
    KvRows v() const { return paged ? paged->values(0) : KvRows(values.view); }
};

// n_new tokens at positions [context - n_new, context) of one sequence: a prefill when n_new is
// the context, a decode step when it is 1. Decode caches rotate through 256 MB so that keys and
// values come from DRAM, as they do when every layer has its own.
void bench_attention(benchmark::State& state, AttentionShape s, DType kv_type, AttentionImpl impl,
                     int64_t n_new, int64_t context) {
    const KvCacheShape shape{.n_layers = 1,
                             .n_kv_heads = s.n_kv_heads,
                             .head_dim = s.head_dim,
                             .v_head_dim = s.head_dim,
                             .dtype = kv_type};
    const int64_t block = 16, blocks_per_cache = (context + block - 1) / block;
    const auto cache_bytes = int64_t(KvBlockPool::bytes_per_block(shape, block)) * blocks_per_cache;
    const int64_t n_caches =
        n_new == 1 ? std::max<int64_t>(1, (int64_t(256) << 20) / cache_bytes) : 1;
    auto blocks = std::make_shared<KvBlockPool>(shape, block, blocks_per_cache * n_caches);
    std::mt19937_64 rng(3);
    std::normal_distribution<float> normal;
    std::vector<float> rows(size_t(context * s.n_kv_heads * s.head_dim));
    for (float& x : rows)
        x = normal(rng);
    std::vector<AttentionCache> caches(static_cast<size_t>(n_caches));
    for (AttentionCache& c : caches) {
        if (impl == AttentionImpl::Blocked) {
            c.paged = std::make_unique<KvCache>(blocks, context);
            c.paged->reserve(context);
        } else {
            c.keys = make_tensor(kv_type, {context, s.n_kv_heads, s.head_dim});
            c.values = make_tensor(kv_type, {context, s.n_kv_heads, s.head_dim});
        }
        write_rows(c.k(), 0, rows.data(), context);
        write_rows(c.v(), 0, rows.data(), context);
    }
    OwnedTensor q = make_tensor(DType::F32, {n_new, s.n_heads, s.head_dim});
    OwnedTensor out = make_tensor(DType::F32, {n_new, s.n_heads, s.head_dim});
    for (int64_t i = 0; i < q.view.numel(); ++i)
        q.view.data_as<float>()[i] = normal(rng);
    size_t next = 0;
    for (auto _ : state) {
        const cpu::AttentionArgs args{.q = q.view,
                                      .k_cache = caches[next].k(),
                                      .v_cache = caches[next].v(),
                                      .out = out.view,
                                      .start_pos = context - n_new,
                                      .scale = 1.0f / std::sqrt(float(s.head_dim))};
        if (impl == AttentionImpl::PerPosition)
            per_position_attention(args, pool());
        else
            cpu::attention(args, pool());
        next = (next + 1) % caches.size();
    }
}

void register_attention(const AttentionShape& s, DType kv_type, AttentionImpl impl, int64_t n_new,
                        int64_t context) {
    const std::string kv(dtype_name(kv_type));
    const std::string what =
        n_new == 1 ? "decode:" + std::to_string(context) : "prefill:" + std::to_string(n_new);
    const std::string name =
        "attention/" + std::string(s.model) + "/" + impl_name(impl) + "/" + kv + "/" + what;
    benchmark::RegisterBenchmark(name.c_str(), bench_attention, s, kv_type, impl, n_new, context)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    // Scores and weighted values: 2 x 2 flops per (query head, key, d); keys and values read.
    double pairs = 0;
    for (int64_t t = context - n_new; t < context; ++t)
        pairs += double(t + 1);
    const double flops = 4.0 * double(s.n_heads * s.head_dim) * pairs;
    const double bytes =
        2.0 * double(context * s.n_kv_heads * s.head_dim) * double(dtype_block_bytes(kv_type));
    char fields[256];
    std::snprintf(fields, sizeof(fields),
                  "\"kernel\":\"attention\",\"model\":\"%s\",\"impl\":\"%s\",\"kv_type\":"
                  "\"%s\",\"n_new\":%lld,\"context\":%lld,",
                  s.model, impl_name(impl), kv.c_str(), (long long)n_new, (long long)context);
    g_cases[name + "/real_time"] = {fields, bytes, flops};
}

// Prints one JSON object per case (median when repetitions are asked for), for tools.
class JsonLinesReporter : public benchmark::BenchmarkReporter {
  public:
    bool ReportContext(const Context&) override { return true; }
    void ReportRuns(const std::vector<Run>& runs) override {
        for (const Run& run : runs) {
            if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
            if (run.run_type == Run::RT_Iteration && run.repetitions > 1) continue;
            std::string name = run.run_name.str();
            auto it = g_cases.find(name);
            if (it == g_cases.end()) continue;
            const CaseInfo& c = it->second;
            const double seconds =
                run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
            const double gbps = c.bytes / seconds / 1e9, gflops = c.flops / seconds / 1e9;
            std::printf(
                "{%s\"seconds\":%.6g,\"gbps\":%.4g,\"gflops\":%.4g,\"bw_fraction\":%.4f,"
                "\"flops_fraction\":%.4f}\n",
                c.fields.c_str(), seconds, gbps, gflops, gbps / g_bandwidth_gbps,
                gflops / g_peak_gflops);
        }
        std::fflush(stdout);
    }
};

}  // namespace

int main(int argc, char** argv) {
    bool json = false, full = false;
    std::vector<char*> args;
    for (int i = 0; i < argc; ++i) {
        if (std::strcmp(argv[i], "--json") == 0)
            json = true;
        else if (std::strcmp(argv[i], "--full") == 0)
            full = true;
        else if (std::strcmp(argv[i], "--cpu-isa") == 0 && i + 1 < argc)
            // Before the cases are registered: which paths exist depends on the level.
            cpu::force_isa(cpu::parse_isa(argv[++i]));
        else
            args.push_back(argv[i]);
    }
    int n_args = int(args.size());
    benchmark::Initialize(&n_args, args.data());

    g_bandwidth_gbps = bench::measure_read_bandwidth_gbps(pool());
    g_triad_gbps = bench::measure_triad_gbps(pool());
    g_peak_gflops = bench::measure_peak_gflops(pool());
    if (!json)
        std::printf(
            "machine: %.1f GB/s read bandwidth, %.1f GFLOP/s peak FMA (f32), %d threads, %s "
            "kernels\n",
            g_bandwidth_gbps, g_peak_gflops, pool().size(),
            std::string(cpu::isa_name(cpu::active_isa())).c_str());

    const std::vector<DType> types = {DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K,
                                      DType::Q5_K, DType::Q6_K, DType::MXFP4};
    const std::vector<int64_t> ms =
        full ? std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 256} : std::vector<int64_t>{1, 8, 64};
    for (const ExpertShape& s : kShapes) {
        if (!full && std::string(s.model) == "mixtral-8x7b")
            continue;  // 700 MB a step: --full only
        // gpt-oss-20b's shape: its own MXFP4 experts, with Q8_0 as the peer, up to prefill's M.
        const bool gpt_oss = std::string(s.model) == "gpt-oss-20b";
        for (DType type : types) {
            if (!full &&
                (gpt_oss ? type != DType::MXFP4 && type != DType::Q8_0
                         : type != DType::BF16 && type != DType::Q8_0 && type != DType::Q4_K))
                continue;
            // Rows that are not whole K-quant blocks (DeepSeek-V2-Lite's 1408) have no K-quant
            // case.
            if (s.ffn % dtype_block_size(type) != 0 || s.hidden % dtype_block_size(type) != 0)
                continue;
            const std::vector<int64_t> shape_ms =
                gpt_oss && !full ? std::vector<int64_t>{1, 8, 64, 256} : ms;
            for (int64_t m : shape_ms)
                for (Path path : {Path::Auto, Path::Dot, Path::Tile}) {
                    // Both paths side by side where the tile path could run; auto otherwise.
                    const bool both = m > 1 && cpu::tile_gemm_available(type);
                    if (both == (path == Path::Auto)) continue;
                    register_moe(s, type, m, path);
                    if (path == Path::Tile && int8_tiles_with_vnni())
                        register_moe(s, type, m, Path::TileNoVnni);
                }
            // One token where the type has several-row dots: also without them (invariant),
            // the one-row-at-a-time kernel they replace, in the same run.
            if (cpu::row_dot_rows(cpu::vec_dot_kernels(), type)) {
                register_moe(s, type, 1, Path::Invariant);
                if (int8_tiles_with_vnni()) register_moe(s, type, 1, Path::AutoNoVnni);
            }
        }
    }
    // --full adds the few-token products, where tile_gemm_min_tokens's thresholds lie.
    const std::vector<int64_t> linear_ms =
        full ? std::vector<int64_t>{2, 4, 8, 16, 64, 512} : std::vector<int64_t>{16, 64, 512};
    for (const LinearShape& s : kLinearShapes)
        for (DType type : {DType::BF16, DType::Q8_0, DType::Q4_K})
            for (int64_t m : linear_ms)
                for (Path path : {Path::Dot, Path::Tile})
                    if (path == Path::Dot || cpu::tile_gemm_available(type)) {
                        register_linear(s, type, m, path);
                        if (path == Path::Tile && int8_tiles_with_vnni())
                            register_linear(s, type, m, Path::TileNoVnni);
                    }
    // One token (decode): the lm_head of Qwen3-30B-A3B (151936 x 2048, from DRAM), with the
    // several-row dots (auto) and without (invariant), at avx2 also without AVX-VNNI.
    for (DType type : {DType::BF16, DType::Q8_0, DType::Q4_K})
        for (Path path : {Path::Auto, Path::Invariant, Path::AutoNoVnni})
            if (path != Path::AutoNoVnni ||
                (int8_tiles_with_vnni() && cpu::row_dot_rows(cpu::vec_dot_kernels(), type)))
                register_linear({"qwen3-30b-a3b-lm_head", 151936, 2048}, type, 1, path);
    for (const AttentionShape& s : kAttentionShapes) {
        if (!full && std::string(s.model) != "qwen3-30b-a3b") continue;
        for (AttentionImpl impl : {AttentionImpl::Blocked, AttentionImpl::BlockedPositionMajor,
                                   AttentionImpl::PerPosition})
            for (DType kv : {DType::F32, DType::F16, DType::BF16}) {
                // The baselines in f32, the rows the per-position kernel reads.
                if (impl != AttentionImpl::Blocked && kv != DType::F32) continue;
                register_attention(s, kv, impl, 512, 512);
                register_attention(s, kv, impl, 2048, 2048);
                register_attention(s, kv, impl, 1, 4096);
            }
    }
    if (json) {
        JsonLinesReporter reporter;
        benchmark::RunSpecifiedBenchmarks(&reporter);
        std::printf(
            "{\"machine\":{\"bandwidth_gbps\":%.4g,\"peak_gflops\":%.4g,\"threads\":%d,\"isa\":\"%"
            "s\"}}\n",
            g_bandwidth_gbps, g_peak_gflops, pool().size(),
            std::string(cpu::isa_name(cpu::active_isa())).c_str());
    } else {
        benchmark::RunSpecifiedBenchmarks();
    }
    benchmark::Shutdown();
    return 0;
}
