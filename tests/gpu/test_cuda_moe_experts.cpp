// cuda::moe_experts on a GPU against float64 and cpu::moe_experts, fresh random routing each run:
// one token (every expert on the one-token grouped kernels), 5 tokens (grouped kernels with
// several tokens per expert), 48 tokens with one expert holding 40 of them (the cuBLAS path) next
// to grouped ones; always an expert with no tokens and a skipped expert (both passed as empty
// tensors to the GPU, real weights to the CPU reference); every weight type, and Q4_K gate/up
// with Q6_K down as llama.cpp's files mix them; gpt-oss's experts (MXFP4, host biases uploaded
// with the call, the clamped activation) on every path. `out` starts with random values (the op
// adds into it), and a second run must give the same bits. Skips where no GPU is present.
//
// Tolerances (normalised: max |got - want| / max |want|):
// - only grouped (f32) experts vs float64 of the exact weight values: two f32 dot products and a
//   SiLU, each a few 1e-7 relative; 1e-4. Quantized gate/up weights dot x rounded to 8-bit
//   blocks (quant_dot.h): the same 1e-4 against float64 of the layer on that rounded x
//   (test::q8_rounded, the GPU's exact values), and against the exact x the rounding's error,
//   half a step of amax / 127 per element (the host emulation of linear's 8-bit GEMV measured
//   up to 1.2e-2 on one row; here the output also holds `out`, so it is smaller); 2.5e-2.
// - with a cuBLAS-path expert: its x, intermediate and weights are rounded to bf16 (2^-9
//   relative each), ~1e-3 after the sums; 1.5e-2.
// - vs cpu::moe_experts, which quantizes x and the intermediate to Q8_0/Q8_K for quantized
//   weights: float64 vs cpu::moe_experts measured up to 1.9e-2 on these shapes; 5e-2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/expert_ffn.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/gather_copy.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/moe_experts.h"
#include "kernels/cuda_backend.h"
#include "kernels/error.h"
#include "kernels/thread_pool.h"
#include "scheduler/routing.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using test::kGpu;

constexpr int64_t kHidden = 256, kFfn = 512, kExperts = 16;
constexpr int kEmptyExpert = 5, kSkippedExpert = 7, kBusyExpert = 3;

ThreadPool& pool() {
    static ThreadPool instance({.n_threads = 4, .pin = false});
    return instance;
}

struct Routing {
    std::vector<int32_t> offsets, token_index;
    std::vector<float> token_weight;
    std::vector<uint8_t> skip;
};

// top_k distinct experts per token, never kEmptyExpert; with `busy`, tokens 0..39 all include
// kBusyExpert. Slots sorted by expert, then token.
Routing random_routing(int64_t n_tokens, int top_k, bool busy, std::mt19937_64& rng) {
    std::vector<std::vector<int32_t>> tokens_of(kExperts);
    std::vector<std::vector<float>> weights_of(kExperts);
    std::uniform_real_distribution<float> weight(0.05f, 1.0f);
    for (int64_t t = 0; t < n_tokens; ++t) {
        std::vector<int32_t> candidates;
        for (int32_t e = 0; e < kExperts; ++e)
            if (e != kEmptyExpert && !(busy && e == kBusyExpert)) candidates.push_back(e);
        std::shuffle(candidates.begin(), candidates.end(), rng);
        std::vector<int32_t> chosen(candidates.begin(), candidates.begin() + top_k);
        if (busy && t < 40) chosen.back() = kBusyExpert;
        for (int32_t e : chosen) {
            tokens_of[size_t(e)].push_back(int32_t(t));
            weights_of[size_t(e)].push_back(weight(rng));
        }
    }
    Routing r;
    r.offsets.push_back(0);
    for (int e = 0; e < kExperts; ++e) {
        r.token_index.insert(r.token_index.end(), tokens_of[size_t(e)].begin(),
                             tokens_of[size_t(e)].end());
        r.token_weight.insert(r.token_weight.end(), weights_of[size_t(e)].begin(),
                              weights_of[size_t(e)].end());
        r.offsets.push_back(int32_t(r.token_index.size()));
    }
    r.skip.assign(kExperts, 0);
    r.skip[kSkippedExpert] = 1;
    return r;
}

// The activation of cpu::GluOptions in float64.
double gated(double g, double u, const cpu::GluOptions& glu) {
    if (glu.limit <= 0) return g / (1.0 + std::exp(-g)) * u;
    g = std::min(g, double(glu.limit));
    u = std::clamp(u, -double(glu.limit), double(glu.limit));
    return (u + 1) * g / (1.0 + std::exp(-double(glu.alpha) * g));
}

struct HostExpert {
    test::HostWeights gate, up, down;
    std::vector<float> gate_bias, up_bias, down_bias;  // empty: none
};

double bias(const std::vector<float>& b, int64_t i) {
    return b.empty() ? 0.0 : double(b[size_t(i)]);
}

// float64 of the layer over the exact weight values, added to out.
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& out,
                              const std::vector<HostExpert>& experts, const Routing& r,
                              const cpu::GluOptions& glu) {
    std::vector<double> y(out.begin(), out.end());
    std::vector<double> h(kFfn);
    for (int e = 0; e < kExperts; ++e) {
        if (r.skip[size_t(e)]) continue;
        const HostExpert& w = experts[size_t(e)];
        for (int32_t s = r.offsets[size_t(e)]; s < r.offsets[size_t(e) + 1]; ++s) {
            const float* xt = x.data() + int64_t(r.token_index[size_t(s)]) * kHidden;
            for (int64_t f = 0; f < kFfn; ++f) {
                double g = 0, u = 0;
                for (int64_t i = 0; i < kHidden; ++i) {
                    g += double(w.gate.values[size_t(f * kHidden + i)]) * xt[i];
                    u += double(w.up.values[size_t(f * kHidden + i)]) * xt[i];
                }
                h[size_t(f)] = gated(g + bias(w.gate_bias, f), u + bias(w.up_bias, f), glu);
            }
            double* yt = y.data() + int64_t(r.token_index[size_t(s)]) * kHidden;
            for (int64_t c = 0; c < kHidden; ++c) {
                double d = 0;
                for (int64_t f = 0; f < kFfn; ++f)
                    d += double(w.down.values[size_t(c * kFfn + f)]) * h[size_t(f)];
                yt[c] += double(r.token_weight[size_t(s)]) * (d + bias(w.down_bias, c));
            }
        }
    }
    return y;
}

struct Case {
    DType gate_type, down_type;
    int64_t n_tokens;
    int top_k;
    bool busy;
    bool gpt_oss = false;  // biases on every expert and the clamped activation
};

// gpt-oss's activation: limit 7, alpha 1.702.
constexpr cpu::GluOptions kGptOssGlu = {.limit = 7.0f, .alpha = 1.702f};

void run_case(const Case& c, std::mt19937_64& rng, Stream& stream, cuda::Context& ctx) {
    SCOPED_TRACE(std::string("gate/up ") + std::string(dtype_name(c.gate_type)) + ", down " +
                 std::string(dtype_name(c.down_type)) + ", n_tokens " + std::to_string(c.n_tokens) +
                 ", top_k " + std::to_string(c.top_k) +
                 (c.busy ? ", expert 3 with 40 tokens" : "") +
                 (c.gpt_oss ? ", biases and clamped activation" : ""));
    const cpu::GluOptions glu = c.gpt_oss ? kGptOssGlu : cpu::GluOptions{};
    const Routing r = random_routing(c.n_tokens, c.top_k, c.busy, rng);
    // Weights of std 1/sqrt(k) keep every intermediate near 1.
    std::vector<HostExpert> host(kExperts);
    std::vector<OwnedTensor> device;
    std::vector<cpu::ExpertWeights> gpu_experts(kExperts), cpu_experts(kExperts);
    for (int e = 0; e < kExperts; ++e) {
        HostExpert& w = host[size_t(e)];
        w.gate =
            test::random_weights(c.gate_type, kFfn, kHidden, rng, 1.0f / std::sqrt(float(kHidden)));
        w.up =
            test::random_weights(c.gate_type, kFfn, kHidden, rng, 1.0f / std::sqrt(float(kHidden)));
        w.down =
            test::random_weights(c.down_type, kHidden, kFfn, rng, 1.0f / std::sqrt(float(kFfn)));
        cpu_experts[size_t(e)] = {
            .gate = Tensor(w.gate.bytes.data(), c.gate_type, {kFfn, kHidden}),
            .up = Tensor(w.up.bytes.data(), c.gate_type, {kFfn, kHidden}),
            .down = Tensor(w.down.bytes.data(), c.down_type, {kHidden, kFfn})};
        if (c.gpt_oss) {  // host memory on both sides (the GPU call uploads them)
            w.gate_bias = test::random_floats(rng, kFfn, 0.5f);
            w.up_bias = test::random_floats(rng, kFfn, 0.5f);
            w.down_bias = test::random_floats(rng, kHidden, 0.5f);
            cpu_experts[size_t(e)].gate_bias = Tensor(w.gate_bias.data(), DType::F32, {kFfn});
            cpu_experts[size_t(e)].up_bias = Tensor(w.up_bias.data(), DType::F32, {kFfn});
            cpu_experts[size_t(e)].down_bias = Tensor(w.down_bias.data(), DType::F32, {kHidden});
        }
        if (e == kEmptyExpert || e == kSkippedExpert) continue;  // empty on the GPU
        device.push_back(test::upload(w.gate.bytes, c.gate_type, {kFfn, kHidden}, stream));
        device.push_back(test::upload(w.up.bytes, c.gate_type, {kFfn, kHidden}, stream));
        device.push_back(test::upload(w.down.bytes, c.down_type, {kHidden, kFfn}, stream));
        const size_t n = device.size();
        gpu_experts[size_t(e)] = {.gate = *device[n - 3],
                                  .up = *device[n - 2],
                                  .down = *device[n - 1],
                                  .gate_bias = cpu_experts[size_t(e)].gate_bias,
                                  .up_bias = cpu_experts[size_t(e)].up_bias,
                                  .down_bias = cpu_experts[size_t(e)].down_bias};
    }
    const std::vector<float> x = test::random_floats(rng, size_t(c.n_tokens * kHidden));
    const std::vector<float> out0 = test::random_floats(rng, size_t(c.n_tokens * kHidden));
    const OwnedTensor dx = test::upload(x, DType::F32, {c.n_tokens, kHidden}, stream);

    std::vector<std::vector<float>> runs;
    for (int run = 0; run < 2; ++run) {
        const OwnedTensor dout = test::upload(out0, DType::F32, {c.n_tokens, kHidden}, stream);
        cuda::moe_experts(ctx, {.x = *dx,
                                .out = *dout,
                                .experts = gpu_experts,
                                .offsets = r.offsets,
                                .token_index = r.token_index,
                                .token_weight = r.token_weight,
                                .skip = r.skip,
                                .glu = glu});
        runs.push_back(test::download<float>(*dout, stream));
    }
    const std::vector<float>& got = runs[0];
    ASSERT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)), 0)
        << "a second run gave other bits";

    int max_tokens = 0;
    for (int e = 0; e < kExperts; ++e)
        if (!r.skip[size_t(e)])
            max_tokens = std::max(max_tokens, r.offsets[size_t(e) + 1] - r.offsets[size_t(e)]);
    const bool cublas_path = max_tokens > cuda::kGemvMaxTokens;
    const bool q8_x = is_quantized_weight_type(c.gate_type);
    const test::WorstError vs_exact = test::worst_error(got, reference(x, out0, host, r, glu));
    EXPECT_LT(vs_exact.error, cublas_path ? 1.5e-2
                              : q8_x      ? 2.5e-2
                                          : 1e-4)
        << "vs float64 (max tokens per expert " << max_tokens << "): " << vs_exact.str(kHidden);
    if (q8_x && !cublas_path) {
        const test::WorstError own =
            test::worst_error(got, reference(test::q8_rounded(x), out0, host, r, glu));
        EXPECT_LT(own.error, 1e-4) << "vs float64 on the 8-bit x: " << own.str(kHidden);
    }

    std::vector<float> cpu_out = out0;
    std::vector<float> x_copy = x;
    cpu::moe_experts({.x = Tensor(x_copy.data(), DType::F32, {c.n_tokens, kHidden}),
                      .out = Tensor(cpu_out.data(), DType::F32, {c.n_tokens, kHidden}),
                      .experts = cpu_experts,
                      .offsets = r.offsets,
                      .token_index = r.token_index,
                      .token_weight = r.token_weight,
                      .skip = r.skip,
                      .glu = glu},
                     pool());
    const test::WorstError vs_cpu =
        test::worst_error(got, std::vector<double>(cpu_out.begin(), cpu_out.end()));
    EXPECT_LT(vs_cpu.error, 5e-2) << "vs cpu::moe_experts: " << vs_cpu.str(kHidden);
}

const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                        DType::Q5_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4};

TEST(CudaMoeExperts, EveryWeightTypeDecodeAndPrefillMatchFloat64AndTheCpu) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    std::vector<std::pair<DType, DType>> pairs;
    for (DType type : kTypes)
        pairs.emplace_back(type, type);
    pairs.emplace_back(DType::Q4_K, DType::Q6_K);
    for (const auto& [gate_type, down_type] : pairs) {
        run_case({gate_type, down_type, 1, 6, false}, rng, *stream, ctx);
        run_case({gate_type, down_type, 5, 4, false}, rng, *stream, ctx);
        run_case({gate_type, down_type, 48, 2, true}, rng, *stream, ctx);
        if (HasFatalFailure()) return;
    }
}

// gpt-oss's experts: MXFP4 gate/up/down (and bf16, as a dequantized checkpoint holds them), a
// bias on every matrix, the clamped activation; the grouped kernels (1 and 5 tokens) and the
// cuBLAS path (an expert with 40 tokens), against float64 and cpu::moe_experts.
TEST(CudaMoeExperts, GptOssBiasesAndClampedActivationMatchFloat64AndTheCpu) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (DType type : {DType::MXFP4, DType::BF16}) {
        run_case({type, type, 1, 4, false, true}, rng, *stream, ctx);
        run_case({type, type, 5, 4, false, true}, rng, *stream, ctx);
        run_case({type, type, 48, 4, true, true}, rng, *stream, ctx);
        if (HasFatalFailure()) return;
    }
}

// Biases must be host f32 of the right length (the call uploads them); anything else is refused
// by name before a launch.
TEST(CudaMoeExperts, ExpertBiasesOnTheDeviceOrMisshapenAreRefused) {
    TANDEM_REQUIRE_GPU();
    std::mt19937_64 rng(7);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    const test::HostWeights gate = test::random_weights(DType::Q8_0, kFfn, kHidden, rng, 0.05f),
                            down = test::random_weights(DType::Q8_0, kHidden, kFfn, rng, 0.05f);
    const OwnedTensor g = test::upload(gate.bytes, DType::Q8_0, {kFfn, kHidden}, *stream);
    const OwnedTensor d = test::upload(down.bytes, DType::Q8_0, {kHidden, kFfn}, *stream);
    std::vector<float> host_bias(kFfn, 0.5f);
    const OwnedTensor device_bias = test::upload(host_bias, DType::F32, {kFfn}, *stream);
    const OwnedTensor x =
        test::upload(std::vector<float>(kHidden, 1.0f), DType::F32, {1, kHidden}, *stream);
    const OwnedTensor out =
        test::upload(std::vector<float>(kHidden, 0.0f), DType::F32, {1, kHidden}, *stream);
    const std::vector<int32_t> offsets = {0, 1}, token_index = {0};
    const std::vector<float> token_weight = {1.0f};
    for (const Tensor& bad : {*device_bias, Tensor(host_bias.data(), DType::F32, {kFfn - 8})}) {
        const std::vector<cpu::ExpertWeights> experts = {
            {.gate = *g, .up = *g, .down = *d, .gate_bias = bad}};
        try {
            cuda::moe_experts(ctx, {.x = *x,
                                    .out = *out,
                                    .experts = experts,
                                    .offsets = offsets,
                                    .token_index = token_index,
                                    .token_weight = token_weight});
            ADD_FAILURE() << "accepted gate bias " << bad.describe();
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("gate bias"), std::string::npos) << e.what();
        }
    }
}

// moe_experts_routed (routing in device memory, grouped on the device) against moe_experts with
// the same routing grouped on the host: the same kernels over the same slots in the same order,
// so the same bits are expected; a difference is reported with its size.
TEST(CudaMoeExperts, RoutingOnTheDeviceEqualsRoutingOnTheHost) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (const auto& [gate_type, down_type] : {std::pair{DType::Q4_K, DType::Q6_K},
                                               {DType::BF16, DType::BF16},
                                               {DType::Q8_0, DType::Q8_0}}) {
        std::vector<OwnedTensor> device;
        std::vector<cpu::ExpertWeights> experts(kExperts);
        for (int e = 0; e < kExperts; ++e) {
            const float s_in = 1.0f / std::sqrt(float(kHidden)),
                        s_ffn = 1.0f / std::sqrt(float(kFfn));
            device.push_back(
                test::upload(test::random_weights(gate_type, kFfn, kHidden, rng, s_in).bytes,
                             gate_type, {kFfn, kHidden}, *stream));
            device.push_back(
                test::upload(test::random_weights(gate_type, kFfn, kHidden, rng, s_in).bytes,
                             gate_type, {kFfn, kHidden}, *stream));
            device.push_back(
                test::upload(test::random_weights(down_type, kHidden, kFfn, rng, s_ffn).bytes,
                             down_type, {kHidden, kFfn}, *stream));
            const size_t n = device.size();
            experts[size_t(e)] = {
                .gate = *device[n - 3], .up = *device[n - 2], .down = *device[n - 1]};
        }
        const cuda::DeviceExpertTable table(ctx, experts);
        for (const auto& [n_tokens, k] : {std::pair<int64_t, int64_t>{1, 8}, {3, 4}, {8, 8}}) {
            SCOPED_TRACE(cat(dtype_name(gate_type), "/", dtype_name(down_type), ", ", n_tokens,
                             " tokens, top-", k));
            tandem::Routing routing{.n_tokens = n_tokens, .n_experts_active = k};
            for (int64_t t = 0; t < n_tokens; ++t) {
                std::vector<int32_t> ids(kExperts);
                std::iota(ids.begin(), ids.end(), 0);
                std::shuffle(ids.begin(), ids.end(), rng);
                for (int64_t j = 0; j < k; ++j) {
                    routing.experts.push_back(ids[size_t(j)]);
                    routing.weights.push_back(std::uniform_real_distribution<float>(0.05f, 1)(rng));
                }
            }
            const ExpertGroups groups = group_by_expert(routing, kExperts);
            const std::vector<float> x = test::random_floats(rng, size_t(n_tokens * kHidden));
            const std::vector<float> out0 = test::random_floats(rng, size_t(n_tokens * kHidden));
            const OwnedTensor dx = test::upload(x, DType::F32, {n_tokens, kHidden}, *stream);
            const OwnedTensor on_host =
                test::upload(out0, DType::F32, {n_tokens, kHidden}, *stream);
            const OwnedTensor on_device =
                test::upload(out0, DType::F32, {n_tokens, kHidden}, *stream);
            const OwnedTensor ids =
                test::upload(routing.experts, DType::I32, {n_tokens, k}, *stream);
            const OwnedTensor weights =
                test::upload(routing.weights, DType::F32, {n_tokens, k}, *stream);
            cuda::moe_experts(ctx, {.x = *dx,
                                    .out = *on_host,
                                    .experts = experts,
                                    .offsets = groups.offsets,
                                    .token_index = groups.token_index,
                                    .token_weight = groups.token_weight});
            cuda::moe_experts_routed(
                ctx, table,
                {.x = *dx, .out = *on_device, .expert_ids = *ids, .expert_weights = *weights});
            const std::vector<float> a = test::download<float>(*on_host, *stream);
            const std::vector<float> b = test::download<float>(*on_device, *stream);
            const test::WorstError diff =
                test::worst_error(b, std::vector<double>(a.begin(), a.end()));
            EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
                << "routed on the device differs from routed on the host: " << diff.str(kHidden);
        }
    }
}

// A writable table, as a captured hybrid decode step uses: its entries are device memory the host
// rewrites between launches, and an expert with a null entry is computed elsewhere. Two launches
// over one table with different entries each give cuda::moe_experts with those experts skipped.
TEST(CudaMoeExperts, AWritableTableRunsTheExpertsItNamesAndNoOthers) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    for (const auto& [gate_type, down_type] :
         {std::pair{DType::Q4_K, DType::Q6_K}, {DType::BF16, DType::BF16}}) {
        std::vector<OwnedTensor> device;
        std::vector<cpu::ExpertWeights> experts(kExperts);
        for (int e = 0; e < kExperts; ++e) {
            const float s_in = 1.0f / std::sqrt(float(kHidden)),
                        s_ffn = 1.0f / std::sqrt(float(kFfn));
            for (int m = 0; m < 3; ++m) {
                const bool down = m == 2;
                const DType type = down ? down_type : gate_type;
                const int64_t rows = down ? kHidden : kFfn, cols = down ? kFfn : kHidden;
                device.push_back(test::upload(
                    test::random_weights(type, rows, cols, rng, down ? s_ffn : s_in).bytes, type,
                    {rows, cols}, *stream));
            }
            const size_t n = device.size();
            experts[size_t(e)] = {
                .gate = *device[n - 3], .up = *device[n - 2], .down = *device[n - 1]};
        }
        ASSERT_TRUE(cuda::writable_table_supported(experts[0]));
        const OwnedTensor entries =
            make_tensor(DType::I32, {int64_t(kExperts * sizeof(ExpertTableEntry) / 4)}, kGpu);
        const cuda::DeviceExpertTable table(
            static_cast<const ExpertTableEntry*>(entries.view.data()), kExperts, kHidden, kFfn,
            gate_type, down_type);
        for (const auto& [n_tokens, k] : {std::pair<int64_t, int64_t>{1, 8}, {3, 4}, {8, 8}}) {
            SCOPED_TRACE(cat(dtype_name(gate_type), "/", dtype_name(down_type), ", ", n_tokens,
                             " tokens, top-", k));
            tandem::Routing routing{.n_tokens = n_tokens, .n_experts_active = k};
            for (int64_t t = 0; t < n_tokens; ++t) {
                std::vector<int32_t> ids(kExperts);
                std::iota(ids.begin(), ids.end(), 0);
                std::shuffle(ids.begin(), ids.end(), rng);
                for (int64_t j = 0; j < k; ++j) {
                    routing.experts.push_back(ids[size_t(j)]);
                    routing.weights.push_back(std::uniform_real_distribution<float>(0.05f, 1)(rng));
                }
            }
            const ExpertGroups groups = group_by_expert(routing, kExperts);
            const OwnedTensor ids =
                test::upload(routing.experts, DType::I32, {n_tokens, k}, *stream);
            const OwnedTensor weights =
                test::upload(routing.weights, DType::F32, {n_tokens, k}, *stream);
            const std::vector<float> x = test::random_floats(rng, size_t(n_tokens * kHidden));
            const OwnedTensor dx = test::upload(x, DType::F32, {n_tokens, kHidden}, *stream);
            for (int launch = 0; launch < 2; ++launch) {
                // About half the experts here; the entries rewritten for each launch.
                std::vector<ExpertTableEntry> host_entries(kExperts);
                std::vector<uint8_t> skip(kExperts);
                for (int e = 0; e < kExperts; ++e) {
                    skip[size_t(e)] = uint8_t(rng() % 2);
                    if (!skip[size_t(e)])
                        host_entries[size_t(e)] = {.gate = experts[size_t(e)].gate.data(),
                                                   .up = experts[size_t(e)].up.data(),
                                                   .down = experts[size_t(e)].down.data()};
                }
                stream->copy_async(entries.view.data(), host_entries.data(),
                                   host_entries.size() * sizeof(ExpertTableEntry),
                                   CopyDirection::HostToDevice);
                stream->synchronize();
                const std::vector<float> out0 =
                    test::random_floats(rng, size_t(n_tokens * kHidden));
                const OwnedTensor want =
                    test::upload(out0, DType::F32, {n_tokens, kHidden}, *stream);
                const OwnedTensor got =
                    test::upload(out0, DType::F32, {n_tokens, kHidden}, *stream);
                cuda::moe_experts(ctx, {.x = *dx,
                                        .out = *want,
                                        .experts = experts,
                                        .offsets = groups.offsets,
                                        .token_index = groups.token_index,
                                        .token_weight = groups.token_weight,
                                        .skip = skip});
                cuda::moe_experts_routed(
                    ctx, table,
                    {.x = *dx, .out = *got, .expert_ids = *ids, .expert_weights = *weights});
                const std::vector<float> a = test::download<float>(*want, *stream);
                const std::vector<float> b = test::download<float>(*got, *stream);
                for (size_t i = 0; i < a.size(); ++i)
                    ASSERT_NEAR(b[i], a[i], 1e-5 + 1e-5 * std::fabs(a[i]))
                        << "launch " << launch << ", element " << i;
            }
        }
    }
}

// cuda::gather_copies: the listed copies (count and list in device memory), from page-locked
// host memory (cudaMallocHost's, and a registered range at the device address the registration
// returns) into device memory, aligned and unaligned; entries past the count are not copied and
// nothing else is written.
TEST(CudaGatherCopies, TheListedCopiesLandAndNothingElseIsWritten) {
    TANDEM_REQUIRE_GPU();
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    auto stream = make_stream(kGpu);
    constexpr size_t kBytes = size_t(1) << 20;
    Buffer pinned = allocate_pinned(kGpu, kBytes);
    std::vector<uint8_t> registered_memory(kBytes + 4096);
    auto* registered = reinterpret_cast<uint8_t*>(
        (reinterpret_cast<uintptr_t>(registered_memory.data()) + 4095) / 4096 * 4096);
    std::string why;
    auto* registered_on_device =
        static_cast<uint8_t*>(cuda_host_register(registered, kBytes, &why));
    ASSERT_NE(registered_on_device, nullptr) << why;
    for (size_t i = 0; i < kBytes; ++i) {
        static_cast<uint8_t*>(pinned.data())[i] = uint8_t(rng());
        registered[i] = uint8_t(rng());
    }
    const OwnedTensor dst = make_tensor(DType::I32, {int64_t(2 * kBytes / 4)}, kGpu);
    stream->memset_async(dst.view.data(), 0xA5, 2 * kBytes);
    std::vector<uint8_t> want(2 * kBytes, 0xA5);
    std::vector<ExpertCopy> list;
    constexpr int64_t kMax = 24;
    const int32_t count = 17;
    size_t at = 0;  // destinations do not overlap
    for (int i = 0; i < kMax; ++i) {
        const bool aligned = i % 3 != 0;
        const size_t bytes = aligned ? 16 * (1 + rng() % 4096) : 1 + rng() % 50000;
        const size_t from =
            aligned ? 16 * (rng() % ((kBytes - bytes) / 16)) : rng() % (kBytes - bytes);
        at = aligned ? (at + 15) / 16 * 16 : at + 1;
        const bool use_registered = i % 2 == 0;
        const uint8_t* host = use_registered ? registered : static_cast<uint8_t*>(pinned.data());
        const uint8_t* src = (use_registered ? registered_on_device : host) + from;
        list.push_back(
            {.src = src, .dst = static_cast<uint8_t*>(dst.view.data()) + at, .bytes = bytes});
        if (i < count) std::memcpy(want.data() + at, host + from, bytes);
        at += bytes;
        ASSERT_LE(at, 2 * kBytes);
    }
    const OwnedTensor device_list =
        test::upload_bytes(list.data(), list.size() * sizeof(ExpertCopy), DType::I32,
                           {int64_t(list.size() * sizeof(ExpertCopy) / 4)}, *stream);
    const OwnedTensor device_count =
        test::upload(std::vector<int32_t>{count}, DType::I32, {1}, *stream);
    cuda::gather_copies(stream->native_handle(),
                        static_cast<const ExpertCopy*>(device_list.view.data()),
                        device_count.view.data_as<const int32_t>(), kMax);
    const std::vector<uint8_t> got = test::download_bytes(dst.view, *stream);
    cuda_host_unregister(registered);
    for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], want[i]) << "byte " << i;
}

TEST(CudaMoeExperts, MixedWeightTypesInOneLayerAreRefused) {
    TANDEM_REQUIRE_GPU();
    auto stream = make_stream(kGpu);
    cuda::Context ctx(*stream);
    const OwnedTensor x = make_tensor(DType::F32, {1, kHidden}, kGpu);
    const OwnedTensor out = make_tensor(DType::F32, {1, kHidden}, kGpu);
    const OwnedTensor g0 = make_tensor(DType::Q8_0, {kFfn, kHidden}, kGpu);
    const OwnedTensor d0 = make_tensor(DType::Q8_0, {kHidden, kFfn}, kGpu);
    const OwnedTensor g1 = make_tensor(DType::Q4_0, {kFfn, kHidden}, kGpu);
    const std::vector<cpu::ExpertWeights> experts = {{.gate = *g0, .up = *g0, .down = *d0},
                                                     {.gate = *g1, .up = *g1, .down = *d0}};
    const std::vector<int32_t> offsets = {0, 1, 2}, token_index = {0, 0};
    const std::vector<float> token_weight = {0.5f, 0.5f};
    const cuda::MoeExpertsArgs args{.x = *x,
                                    .out = *out,
                                    .experts = experts,
                                    .offsets = offsets,
                                    .token_index = token_index,
                                    .token_weight = token_weight};
    EXPECT_THROW(cuda::moe_experts(ctx, args), Error);
    const std::vector<int32_t> bad_token = {0, 3};
    cuda::MoeExpertsArgs bad = args;
    bad.token_index = bad_token;
    EXPECT_THROW(cuda::moe_experts(ctx, bad), Error);
}

}  // namespace
}  // namespace tandem
