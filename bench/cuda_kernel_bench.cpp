// tandem-cuda-bench: the CUDA matmul kernels against the GPU's own ceilings, in one run (< 60 s on
// an H200).
//
//   (a) copy    device-to-device copy of 1 GiB: bytes read + written per second, the HBM ceiling
//   (b) gemv    cuda::linear at n_tokens 1, 4, 8 for bf16, q8_0, q4_k, q6_k weights on OLMoE- and
//               Qwen3-30B-A3B-like shapes: weight bytes read per second and the ratio to (a)
//   (c) gemm    cuda::linear at n_tokens 512 (bf16 and q4_k weights: dequantize + cuBLAS) next to
//               a plain cublasGemmEx bf16 GEMM of the same shape (~ the tensor-core peak)
//   (d) moe     cuda::moe_experts for one OLMoE layer (64 experts, top-8, hidden 2048, ffn 1024,
//               q4_k) at 1 token and 512 tokens, random routing per call
//
// Timing: CUDA events around a batch of calls, after a warm-up batch; the median over 20 batches.
// Weights (and the moe layer) rotate through copies of >= 256 MB in all so that L2 (60 MB on an
// H200) does not serve them; data is random and non-zero (valid quantized blocks). Prints one
// markdown table; --json FILE also writes one JSON object per case. Without a GPU it says so and
// exits 0.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cpu/expert_ffn.h"
#include "kernels/cpu/quant.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/moe_experts.h"
#include "kernels/device.h"
#include "kernels/error.h"
#include "kernels/stream.h"
#include "kernels/tensor.h"

namespace tandem {
namespace {

constexpr int kBatches = 20;
constexpr size_t kRotationBytes = size_t(256) << 20;
const Device kGpu{DeviceKind::Cuda, 0};

void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) fail(what, ": ", cudaGetErrorString(status));
}

struct Row {
    std::string group, name, shape;
    int64_t n_tokens = 0;
    double us = 0;         // per call
    double gbps = 0;       // bytes per second / 1e9 (0: not a bandwidth case)
    double of_copy = 0;    // gbps / copy bandwidth
    double tflops = 0;     // 0: not a compute case
    double of_cublas = 0;  // tflops / plain cuBLAS bf16 GEMM of the shape
};

class Bench {
  public:
    Bench() : stream_(make_stream(kGpu)), ctx_(*stream_) {
        native_ = static_cast<cudaStream_t>(ctx_.native_stream());
        check(cudaEventCreate(&start_), "cudaEventCreate");
        check(cudaEventCreate(&stop_), "cudaEventCreate");
    }
    ~Bench() {
        cudaEventDestroy(start_);
        cudaEventDestroy(stop_);
    }

    cuda::Context& ctx() { return ctx_; }
    cudaStream_t stream() const { return native_; }

    // Median over kBatches of the time per call (microseconds) of `batch` calls of launch(i),
    // i counting on across batches (to rotate inputs), after one warm-up batch.
    double time_us(int batch, const std::function<void(int64_t)>& launch) {
        int64_t i = 0;
        for (int b = 0; b < batch; ++b)
            launch(i++);
        check(cudaStreamSynchronize(native_), "warm-up");
        std::vector<double> per_call;
        for (int r = 0; r < kBatches; ++r) {
            check(cudaEventRecord(start_, native_), "cudaEventRecord");
            for (int b = 0; b < batch; ++b)
                launch(i++);
            check(cudaEventRecord(stop_, native_), "cudaEventRecord");
            check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
            float ms = 0;
            check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
            per_call.push_back(1e3 * ms / batch);
        }
        std::sort(per_call.begin(), per_call.end());
        return per_call[per_call.size() / 2];
    }

  private:
    std::unique_ptr<Stream> stream_;
    cuda::Context ctx_;
    cudaStream_t native_ = nullptr;
    cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Rows of random weights for a row length k: whole rows of about 1 MB, quantized once per
// (type, k) and tiled over device buffers.
const std::vector<uint8_t>& pattern(DType type, int64_t k) {
    static std::map<std::pair<DType, int64_t>, std::vector<uint8_t>> cache;
    auto& bytes = cache[{type, k}];
    if (!bytes.empty()) return bytes;
    const int64_t rb = row_bytes(type, k);
    const int64_t rows = std::max<int64_t>(1, (int64_t(1) << 20) / rb);
    std::mt19937_64 rng(uint64_t(k) * 131 + uint64_t(type));
    std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(float(k)));
    std::vector<float> x(static_cast<size_t>(k));
    bytes.resize(size_t(rows * rb));
    for (int64_t r = 0; r < rows; ++r) {
        for (float& v : x)
            v = normal(rng);
        uint8_t* out = bytes.data() + r * rb;
        if (type == DType::BF16) {
            for (int64_t i = 0; i < k; ++i) {
                const uint16_t b = f32_to_bf16(x[size_t(i)]);
                std::memcpy(out + 2 * i, &b, 2);
            }
        } else if (type == DType::F32) {
            std::memcpy(out, x.data(), size_t(rb));
        } else {
            cpu::quantize_row(type, x.data(), out, k);
        }
    }
    return bytes;
}

// Fills `bytes` of device memory with the pattern, doubling copies on the device.
void fill(void* device, size_t bytes, const std::vector<uint8_t>& pattern, cudaStream_t s) {
    const size_t first = std::min(bytes, pattern.size());
    check(cudaMemcpyAsync(device, pattern.data(), first, cudaMemcpyHostToDevice, s), "fill");
    for (size_t filled = first; filled < bytes;) {
        const size_t n = std::min(filled, bytes - filled);
        check(cudaMemcpyAsync(static_cast<uint8_t*>(device) + filled, device, n,
                              cudaMemcpyDeviceToDevice, s),
              "fill");
        filled += n;
    }
    check(cudaStreamSynchronize(s), "fill");
}

Buffer random_floats_on_device(int64_t n, cudaStream_t s, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> host(static_cast<size_t>(n));
    for (float& v : host)
        v = normal(rng);
    Buffer b = allocate(kGpu, size_t(n) * 4);
    check(cudaMemcpyAsync(b.data(), host.data(), host.size() * 4, cudaMemcpyHostToDevice, s),
          "upload");
    check(cudaStreamSynchronize(s), "upload");
    return b;
}

std::string shape_str(int64_t m, int64_t k) {
    return std::to_string(m) + "x" + std::to_string(k);
}

std::string fixed(double v, int digits) {
    if (v == 0) return "";
    char text[32];
    std::snprintf(text, sizeof text, "%.*f", digits, v);
    return text;
}

// Prints each row (and its JSON line) as soon as it is measured, so a failure late in the run
// keeps what came before.
class Rows {
  public:
    Rows(const std::string& json_path, std::string gpu) : gpu_(std::move(gpu)) {
        if (json_path.empty()) return;
        json_.open(json_path);
        if (!json_) fail("tandem-cuda-bench: cannot write ", json_path);
    }

    void push_back(const Row& r) {
        std::printf("| %s | %s | %s | %s | %.1f | %s | %s | %s | %s |\n", r.group.c_str(),
                    r.name.c_str(), r.shape.c_str(),
                    r.n_tokens ? std::to_string(r.n_tokens).c_str() : "", r.us,
                    fixed(r.gbps, 0).c_str(), fixed(r.of_copy * 100, 1).c_str(),
                    fixed(r.tflops, 1).c_str(), fixed(r.of_cublas * 100, 1).c_str());
        std::fflush(stdout);
        if (json_.is_open())
            json_ << nlohmann::json{{"group", r.group},
                                    {"case", r.name},
                                    {"shape", r.shape},
                                    {"n_tokens", r.n_tokens},
                                    {"us", r.us},
                                    {"gbps", r.gbps},
                                    {"of_copy", r.of_copy},
                                    {"tflops", r.tflops},
                                    {"of_cublas", r.of_cublas},
                                    {"gpu", gpu_}}
                         .dump()
                  << std::endl;
    }

  private:
    std::string gpu_;
    std::ofstream json_;
};

double copy_bandwidth(Bench& bench, Rows& rows) {
    const size_t bytes = size_t(1) << 30;
    Buffer a = allocate(kGpu, bytes), b = allocate(kGpu, bytes);
    check(cudaMemsetAsync(a.data(), 0x5a, bytes, bench.stream()), "memset");
    const double us = bench.time_us(2, [&](int64_t i) {
        void* src = i % 2 ? b.data() : a.data();
        void* dst = i % 2 ? a.data() : b.data();
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, bench.stream()), "copy");
    });
    const double gbps = 2.0 * double(bytes) / (us * 1e-6) / 1e9;
    rows.push_back({.group = "copy",
                    .name = "d2d 1 GiB (read + write)",
                    .shape = "-",
                    .us = us,
                    .gbps = gbps,
                    .of_copy = 1.0});
    return gbps;
}

struct Matrix {
    std::string name;
    int64_t m, k;
};

void gemv_cases(Bench& bench, double copy_gbps, Rows& rows) {
    const Matrix shapes[] = {{"olmoe expert down", 2048, 1024},
                             {"qwen3-30b expert gate", 768, 2048},
                             {"dense ffn down", 4096, 14336},
                             {"qwen3 lm_head", 151936, 2048}};
    for (DType type : {DType::BF16, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
        for (const Matrix& s : shapes) {
            const int64_t bytes = s.m * row_bytes(type, s.k);
            const int64_t copies =
                std::max<int64_t>(1, int64_t((kRotationBytes + bytes - 1) / bytes));
            Buffer w = allocate(kGpu, size_t(bytes * copies));
            fill(w.data(), size_t(bytes * copies), pattern(type, s.k), bench.stream());
            Buffer x = random_floats_on_device(8 * s.k, bench.stream(), 7);
            Buffer y = allocate(kGpu, size_t(8 * s.m * 4));
            for (int64_t n : {1, 4, 8}) {
                const Tensor xt(x.data(), DType::F32, {n, s.k}, kGpu);
                const Tensor yt(y.data(), DType::F32, {n, s.m}, kGpu);
                const double us = bench.time_us(int(std::min<int64_t>(copies, 64)), [&](int64_t i) {
                    const Tensor wt(static_cast<uint8_t*>(w.data()) + (i % copies) * bytes, type,
                                    {s.m, s.k}, kGpu);
                    cuda::linear(bench.ctx(), xt, wt, Tensor(), yt);
                });
                const double gbps = double(bytes) / (us * 1e-6) / 1e9;
                rows.push_back({.group = "gemv",
                                .name = std::string(dtype_name(type)) + " " + s.name,
                                .shape = shape_str(s.m, s.k),
                                .n_tokens = n,
                                .us = us,
                                .gbps = gbps,
                                .of_copy = gbps / copy_gbps});
            }
        }
    }
}

void check_cublas(cublasStatus_t status, const char* what) {
    if (status != CUBLAS_STATUS_SUCCESS) fail(what, ": ", cublasGetStatusString(status));
}

void gemm_cases(Bench& bench, Rows& rows) {
    const int64_t n = 512;
    const Matrix shapes[] = {{"olmoe expert gate", 1024, 2048},
                             {"qwen3-30b q_proj", 4096, 2048},
                             {"dense ffn down", 4096, 14336}};
    auto handle = static_cast<cublasHandle_t>(bench.ctx().cublas_handle());
    for (const Matrix& s : shapes) {
        const double flop = 2.0 * double(n) * double(s.m) * double(s.k);
        Buffer x = random_floats_on_device(n * s.k, bench.stream(), 11);
        Buffer y = allocate(kGpu, size_t(n * s.m * 4));
        // The peer: bf16 x bf16 -> f32 on tensor cores, inputs already bf16.
        Buffer wb = allocate(kGpu, size_t(s.m * s.k * 2)), xb = allocate(kGpu, size_t(n * s.k * 2));
        fill(wb.data(), wb.bytes(), pattern(DType::BF16, s.k), bench.stream());
        fill(xb.data(), xb.bytes(), pattern(DType::BF16, s.k), bench.stream());
        const float alpha = 1, beta = 0;
        const double cublas_us = bench.time_us(4, [&](int64_t) {
            check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(s.m), int(n), int(s.k),
                                      &alpha, wb.data(), CUDA_R_16BF, int(s.k), xb.data(),
                                      CUDA_R_16BF, int(s.k), &beta, y.data(), CUDA_R_32F, int(s.m),
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                         "cublasGemmEx");
        });
        const double cublas_tflops = flop / (cublas_us * 1e-6) / 1e12;
        rows.push_back({.group = "gemm",
                        .name = "cublasGemmEx bf16 (peer) " + s.name,
                        .shape = shape_str(s.m, s.k),
                        .n_tokens = n,
                        .us = cublas_us,
                        .tflops = cublas_tflops,
                        .of_cublas = 1.0});
        for (DType type : {DType::BF16, DType::Q4_K}) {
            Buffer w = allocate(kGpu, size_t(s.m * row_bytes(type, s.k)));
            fill(w.data(), w.bytes(), pattern(type, s.k), bench.stream());
            const Tensor wt(w.data(), type, {s.m, s.k}, kGpu);
            const Tensor xt(x.data(), DType::F32, {n, s.k}, kGpu);
            const Tensor yt(y.data(), DType::F32, {n, s.m}, kGpu);
            const double us =
                bench.time_us(4, [&](int64_t) { cuda::linear(bench.ctx(), xt, wt, Tensor(), yt); });
            const double tflops = flop / (us * 1e-6) / 1e12;
            rows.push_back({.group = "gemm",
                            .name = "linear " + std::string(dtype_name(type)) + " " + s.name,
                            .shape = shape_str(s.m, s.k),
                            .n_tokens = n,
                            .us = us,
                            .tflops = tflops,
                            .of_cublas = tflops / cublas_tflops});
        }
    }
}

void moe_cases(Bench& bench, double copy_gbps, Rows& rows) {
    constexpr int64_t kExperts = 64, kTopK = 8, kHidden = 2048, kFfn = 1024, kLayers = 4;
    const DType type = DType::Q4_K;
    const int64_t gate_bytes = kFfn * row_bytes(type, kHidden);
    const int64_t down_bytes = kHidden * row_bytes(type, kFfn);
    const int64_t expert_bytes = 2 * gate_bytes + down_bytes;
    // kLayers copies of the layer (~0.9 GB) so that one call's experts are not in L2.
    Buffer weights = allocate(kGpu, size_t(kLayers * kExperts * expert_bytes));
    fill(weights.data(), weights.bytes(), pattern(type, kHidden), bench.stream());
    auto* base = static_cast<uint8_t*>(weights.data());
    std::vector<std::vector<cpu::ExpertWeights>> layers(kLayers);
    for (int64_t l = 0; l < kLayers; ++l)
        for (int64_t e = 0; e < kExperts; ++e) {
            uint8_t* p = base + (l * kExperts + e) * expert_bytes;
            // down rows (k = ffn) reuse the hidden-length pattern's bytes: any valid Q4_K
            // blocks do for timing.
            layers[size_t(l)].push_back(
                {.gate = Tensor(p, type, {kFfn, kHidden}, kGpu),
                 .up = Tensor(p + gate_bytes, type, {kFfn, kHidden}, kGpu),
                 .down = Tensor(p + 2 * gate_bytes, type, {kHidden, kFfn}, kGpu)});
        }
    std::mt19937_64 rng(5);
    for (int64_t n_tokens : {int64_t(1), int64_t(512)}) {
        struct Routing {
            std::vector<int32_t> offsets, token_index;
            std::vector<float> token_weight;
        };
        std::vector<Routing> routings(16);
        for (Routing& r : routings) {
            std::vector<std::vector<int32_t>> tokens_of(kExperts);
            std::vector<int32_t> ids(kExperts);
            for (int64_t t = 0; t < n_tokens; ++t) {
                for (int32_t e = 0; e < kExperts; ++e)
                    ids[size_t(e)] = e;
                std::shuffle(ids.begin(), ids.end(), rng);
                for (int64_t j = 0; j < kTopK; ++j)
                    tokens_of[size_t(ids[size_t(j)])].push_back(int32_t(t));
            }
            r.offsets.push_back(0);
            for (const auto& tokens : tokens_of) {
                r.token_index.insert(r.token_index.end(), tokens.begin(), tokens.end());
                r.offsets.push_back(int32_t(r.token_index.size()));
            }
            r.token_weight.assign(r.token_index.size(), 1.0f / kTopK);
        }
        Buffer x = random_floats_on_device(n_tokens * kHidden, bench.stream(), 13);
        Buffer out = allocate(kGpu, size_t(n_tokens * kHidden * 4));
        check(cudaMemsetAsync(out.data(), 0, out.bytes(), bench.stream()), "memset");
        const Tensor xt(x.data(), DType::F32, {n_tokens, kHidden}, kGpu);
        const Tensor outt(out.data(), DType::F32, {n_tokens, kHidden}, kGpu);
        int64_t bytes_read = 0;
        const double us = bench.time_us(n_tokens == 1 ? 16 : 2, [&](int64_t i) {
            const Routing& r = routings[size_t(i % 16)];
            cuda::moe_experts(bench.ctx(), {.x = xt,
                                            .out = outt,
                                            .experts = layers[size_t(i % kLayers)],
                                            .offsets = r.offsets,
                                            .token_index = r.token_index,
                                            .token_weight = r.token_weight});
        });
        for (int64_t e = 0; e < kExperts; ++e)
            if (routings[0].offsets[size_t(e) + 1] > routings[0].offsets[size_t(e)])
                bytes_read += expert_bytes;
        const double flop = 2.0 * 3.0 * double(n_tokens * kTopK) * double(kHidden * kFfn);
        const double gbps = double(bytes_read) / (us * 1e-6) / 1e9;
        rows.push_back({.group = "moe",
                        .name = "olmoe layer q4_k, 64 experts top-8",
                        .shape = "2048/1024",
                        .n_tokens = n_tokens,
                        .us = us,
                        .gbps = gbps,
                        .of_copy = gbps / copy_gbps,
                        .tflops = flop / (us * 1e-6) / 1e12});
    }
}

int run(int argc, char** argv) {
    std::string json_path;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--json" && i + 1 < argc)
            json_path = argv[++i];
        else if (arg == "--help" || arg == "-h") {
            std::printf("usage: tandem-cuda-bench [--json FILE]\n");
            return 0;
        } else {
            std::fprintf(stderr, "tandem-cuda-bench: unknown argument %s\n", arg.c_str());
            return 2;
        }
    }
    if (!cuda_compiled() || cuda_device_count() == 0) {
        std::printf("tandem-cuda-bench: no CUDA device here; nothing measured\n");
        return 0;
    }
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    Bench bench;
    std::printf("GPU: %s, %d SMs, L2 %d MB\n\n", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize >> 20);
    std::printf(
        "| group | case | m x k | n_tokens | us/call | GB/s | of copy | TFLOP/s | of cuBLAS "
        "|\n|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    Rows rows(json_path, prop.name);
    const double copy_gbps = copy_bandwidth(bench, rows);
    // One group failing (a kernel error) does not hide the others' figures.
    int failed = 0;
    const auto group = [&](const char* name, const std::function<void()>& body) {
        try {
            body();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "tandem-cuda-bench: %s failed: %s\n", name, e.what());
            ++failed;
        }
    };
    group("gemv", [&] { gemv_cases(bench, copy_gbps, rows); });
    group("gemm", [&] { gemm_cases(bench, rows); });
    group("moe", [&] { moe_cases(bench, copy_gbps, rows); });
    return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
    try {
        return tandem::run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-cuda-bench: %s\n", e.what());
        return 1;
    }
}
