#include "kernels/cpu/tile_gemm.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <dnnl.hpp>
#include <map>
#include <mutex>
#include <string_view>
#include <tuple>
#include <vector>

#include "kernels/cpu/bf16_tiles.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/int8_tiles.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/vec_dot.h"
#include "kernels/error.h"

namespace tandem::cpu {

namespace {

// Auto until a program sets another policy (EngineConfig.tile_gemm; the tools map
// TANDEM_TILE_GEMM to it): the library reads no environment.
std::atomic<TileGemmPolicy> g_policy{TileGemmPolicy::Auto};
std::atomic<bool> g_batch_invariant{false};

// Fewest tokens for which Auto takes the int8 tiles at the avx2 level, by weight type. Measured
// with tandem-kernel-bench --full --cpu-isa avx2 (linear q_proj of Qwen3-30B-A3B and o_proj of
// OLMoE, 2 threads, an Intel Xeon with AVX-512 forced to avx2, load ~1.5; bench/RESULTS.md
// 2026-12-06 (d)), tiles against the dot products: Q4_K 0.7x at M = 2, even at 4, 1.5x at 8;
// Q8_0 with AVX-VNNI 1.1x at 2, 1.75x at 4; Q8_0 without it 0.46x at 2, 0.69x at 4, even at 8
// (1.2x at 16). (Before the row-interleaved tiles of that date, 16 for both.)
// MXFP4, in the MoE cases of gpt-oss-20b's shape (--full, 32 experts, 4 a token), forced tiles
// against the dot products: with AVX-VNNI 2x at M = 2 (one or two tokens per expert) and 2.4-3.9x
// from 8 up; without it 0.96x at 2, 0.82x at 4, 1.06x at 8 and 1.34x at 64 (about 8 tokens per
// expert). One token keeps the several-row dot, which streams at the read bandwidth.
int64_t mxfp4_tile_min_tokens() {
    return avx_vnni_active() ? 2 : 8;
}

int64_t int8_tile_min_tokens(DType weight_type) {
    if (weight_type == DType::Q4_K) return 6;
    if (weight_type == DType::MXFP4) return mxfp4_tile_min_tokens();
    return avx_vnni_active() ? 2 : 10;
}

// Bytes of one weight tile (f32 or bf16): with the tokens' activations it stays in a 1 MB L2.
constexpr int64_t kTileBytes = int64_t(256) << 10;

const dnnl::engine& cpu_engine() {
    static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

// oneDNN runs its OpenMP loops with the calling thread's OpenMP thread count; inside a task of
// Tandem's pool that must be 1 (the pool already occupies every core). Restored on exit, since
// the calling thread may be the embedding program's.
class SingleOmpThread {
  public:
    SingleOmpThread() : saved_(omp_get_max_threads()) {
        if (saved_ != 1) omp_set_num_threads(1);
    }
    ~SingleOmpThread() {
        if (saved_ != 1) omp_set_num_threads(saved_);
    }
    SingleOmpThread(const SingleOmpThread&) = delete;
    SingleOmpThread& operator=(const SingleOmpThread&) = delete;

  private:
    int saved_;
};

// One matmul of a given shape, ready to run on this thread: y[m, n] = a[m, k] · b[n, k]ᵀ, all
// dense, a and b bf16 or f32. The scratchpad is ours (user mode) so that threads never share
// oneDNN's.
struct Matmul {
    dnnl::matmul primitive;
    dnnl::memory a, b, y, scratch;
    std::vector<std::byte> scratch_bytes;
    std::string impl;
};

Matmul make_matmul(int64_t m, int64_t n, int64_t k, bool bf16) {
    using dnnl::memory;
    const memory::data_type type = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    const memory::desc a({m, k}, type, memory::format_tag::ab);
    const memory::desc b({k, n}, type, memory::format_tag::ba);
    const memory::desc y({m, n}, memory::data_type::f32, memory::format_tag::ab);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, y), attr, cpu_engine());
    Matmul mm{.primitive = dnnl::matmul(pd),
              .a = memory(a, cpu_engine(), nullptr),
              .b = memory(b, cpu_engine(), nullptr),
              .y = memory(y, cpu_engine(), nullptr),
              .impl = pd.impl_info_str()};
    const memory::desc scratch = pd.scratchpad_desc();
    mm.scratch_bytes.resize(std::max<size_t>(scratch.get_size(), 1));
    mm.scratch = memory(scratch, cpu_engine(), mm.scratch_bytes.data());
    return mm;
}

// This thread's matmuls by shape (m varies with the tokens per expert, so a few dozen shapes
// per model); dropped wholesale past a bound rather than tracked by use.
Matmul& thread_matmul(int64_t m, int64_t n, int64_t k, bool bf16) {
    thread_local std::map<std::tuple<int64_t, int64_t, int64_t, bool>, Matmul> cache;
    const auto key = std::make_tuple(m, n, k, bf16);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    if (cache.size() >= 512) cache.clear();
    // Creation goes through oneDNN's process-wide primitive cache; one at a time (a miss here is
    // rare: once per thread and shape), so pool threads meeting a new shape together do not race
    // inside it (ThreadSanitizer reported such a race in libdnnl 2.6).
    static std::mutex creating;
    const std::lock_guard lock(creating);
    return cache.emplace(key, make_matmul(m, n, k, bf16)).first->second;
}

// Whether oneDNN runs f32 and bf16 matmuls with its AVX-512 brgemm here (its reference or
// emulated kernels would be slower than the dot-product path); asked once.
bool onednn_brgemm() {
    static const bool ok = [] {
        try {
            const SingleOmpThread single;
            return make_matmul(16, 64, 256, true).impl.starts_with("brg") &&
                   make_matmul(16, 64, 256, false).impl.starts_with("brg");
        } catch (const dnnl::error&) {
            return false;
        }
    }();
    return ok;
}

// Whether `weight_type` takes int8 tiles (int8_tiles.h): at the avx2 level, where there is no
// bf16 tile path.
bool int8_tiles_here(DType weight_type) {
    return active_isa() == CpuIsa::Avx2 && avx2::int8_tiles_support(weight_type);
}

}  // namespace

void set_tile_gemm_policy(TileGemmPolicy policy) {
    g_policy.store(policy);
}

TileGemmPolicy tile_gemm_policy() {
    return g_policy.load();
}

void set_batch_invariant_kernels(bool on) {
    g_batch_invariant.store(on);
}

bool batch_invariant_kernels() {
    return g_batch_invariant.load();
}

int dot_tokens_per_pass() {
    return batch_invariant_kernels() ? 1 : kMaxDotTokens;
}

RowsDotFn one_token_row_dots(const VecDotKernels& kernels, DType weight_type) {
    return batch_invariant_kernels() ? nullptr : row_dot_rows(kernels, weight_type);
}

bool tile_gemm_available(DType weight_type) {
    if (int8_tiles_here(weight_type)) return true;
    return is_weight_type(weight_type) && active_isa() == CpuIsa::Avx512 && onednn_brgemm();
}

// Measured with tandem-kernel-bench (moe/.../path:dot against path:tile, OLMoE and Qwen3-30B-A3B
// expert shapes, 2 threads, AVX-512 BF16; bench/RESULTS.md 2026-11-29): the smallest M at which
// the tile path was faster on both shapes. f32, f16 and bf16 weights take f32 tiles and win from
// M = 4. Every quantized type has a vector dequantizer to bf16: Q4_0, Q5_0 and Q6_K (slower dot
// products) win 1.4-1.7x at M = 8; Q8_0, Q4_K and Q5_K (fast dot products) break even at 8.
int64_t tile_gemm_min_tokens(DType weight_type) {
    if (int8_tiles_here(weight_type)) return int8_tile_min_tokens(weight_type);
    switch (weight_type) {
        case DType::F32:
        case DType::F16:
        case DType::BF16: return 4;
        case DType::Q4_0:
        case DType::Q5_0:
        case DType::Q6_K:
        case DType::MXFP4: return 8;  // not measured: MXFP4's dot is as slow as Q4_0's

        default: return 16;
    }
}

bool use_tile_gemm(DType weight_type, int64_t n_tokens) {
    if (batch_invariant_kernels()) return false;
    switch (tile_gemm_policy()) {
        case TileGemmPolicy::Never: return false;
        case TileGemmPolicy::Always: return n_tokens > 0 && tile_gemm_available(weight_type);
        case TileGemmPolicy::Auto:
            return n_tokens >= tile_gemm_min_tokens(weight_type) &&
                   tile_gemm_available(weight_type);
    }
    return false;
}

DType tile_gemm_activation_type(DType weight_type) {
    if (int8_tiles_here(weight_type)) return vec_dot_type(weight_type);
    return is_quantized_weight_type(weight_type) ? DType::BF16 : DType::F32;
}

void to_tile_activations(const float* x, DType type, void* out, int64_t n) {
    switch (type) {
        case DType::BF16: return vec_dot_kernels().f32_to_bf16(x, static_cast<uint16_t*>(out), n);
        case DType::Q8_0:
        case DType::Q8_K: return quantize_activation(type, x, out, n);
        default: std::copy_n(x, n, static_cast<float*>(out));
    }
}

int64_t tile_gemm_rows(DType weight_type, int64_t k) {
    // Bytes per weight element in the tile: int8 tiles keep about two (Q8_0: the bytes and their
    // magnitudes; Q4_K: a byte and the scales).
    const int64_t element = int8_tiles_here(weight_type)                            ? 2
                            : tile_gemm_activation_type(weight_type) == DType::BF16 ? 2
                                                                                    : 4;
    return std::clamp<int64_t>(kTileBytes / (element * k) / 16 * 16, 16, 128);
}

void weight_rows_to_bf16(const void* w_rows, DType weight_type, int64_t n_rows, int64_t k,
                         uint16_t* out) {
    if (active_isa() == CpuIsa::Avx512 && avx512::rows_to_bf16(w_rows, weight_type, n_rows, k, out))
        return;
    thread_local std::vector<float> row;
    row.resize(size_t(k));
    const int64_t bytes = row_bytes(weight_type, k);
    for (int64_t r = 0; r < n_rows; ++r) {
        row_to_f32(static_cast<const std::byte*>(w_rows) + r * bytes, weight_type, k, row.data());
        vec_dot_kernels().f32_to_bf16(row.data(), out + r * k, k);
    }
}

void tile_gemm(const void* a, int64_t m, const void* w_rows, DType weight_type, int64_t n_rows,
               int64_t k, float* y) {
    if (!tile_gemm_available(weight_type))
        fail("tile_gemm: no tile path for ", dtype_name(weight_type), " on this CPU");
    if (int8_tiles_here(weight_type))
        return avx2::int8_tile_gemm(a, m, w_rows, weight_type, n_rows, k, y);
    const bool bf16 = tile_gemm_activation_type(weight_type) == DType::BF16;
    const void* b = w_rows;
    if (bf16) {
        thread_local std::vector<uint16_t> tile;
        tile.resize(size_t(n_rows * k));
        weight_rows_to_bf16(w_rows, weight_type, n_rows, k, tile.data());
        b = tile.data();
    } else if (weight_type != DType::F32) {
        thread_local std::vector<float> tile;
        tile.resize(size_t(n_rows * k));
        const int64_t bytes = row_bytes(weight_type, k);
        for (int64_t r = 0; r < n_rows; ++r)
            row_to_f32(static_cast<const std::byte*>(w_rows) + r * bytes, weight_type, k,
                       tile.data() + r * k);
        b = tile.data();
    }
    const SingleOmpThread single;
    Matmul& mm = thread_matmul(m, n_rows, k, bf16);
    mm.a.set_data_handle(const_cast<void*>(a));
    mm.b.set_data_handle(const_cast<void*>(b));
    mm.y.set_data_handle(y);
    thread_local dnnl::stream stream(cpu_engine());
    mm.primitive.execute(stream, {{DNNL_ARG_SRC, mm.a},
                                  {DNNL_ARG_WEIGHTS, mm.b},
                                  {DNNL_ARG_DST, mm.y},
                                  {DNNL_ARG_SCRATCHPAD, mm.scratch}});
    stream.wait();
}

}  // namespace tandem::cpu
