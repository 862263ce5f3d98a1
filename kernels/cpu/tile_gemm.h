// The large-M path of the CPU matrix products: weight tiles through oneDNN's brgemm matmul.
//
// When many tokens share a weight matrix (prefill: tokens per expert, or every token of a dense
// projection), the products are compute-bound, and the integer and f32 dot-product kernels of
// vec_dot.h, which hold a few tokens in registers per pass, reach only 30-60 % of the f32 FMA
// peak. There, weight rows are converted in tiles small enough to stay in L2 (a copy of the
// rows, dequantized once per step and reused by every token), and each tile is multiplied with
// the tokens' activations by oneDNN's matmul. One tile is one task of the caller's thread pool,
// and oneDNN runs single-threaded inside it, so the split across cores and the pinning stay
// Tandem's.
//
// The tile's type (tile_gemm_activation_type) keeps each weight type's precision:
// - f32, f16, bf16 weights: f32 tiles and f32 activations, an f32 matmul. The weights convert
//   exactly and the activations are not rounded, so results equal the dot products' up to the
//   order of f32 additions (a batch and each of its sequences alone still agree to ~1e-6).
// - block-quantized weights: bf16 tiles and bf16 activations, a bf16 matmul (vdpbf16ps, twice
//   the f32 FMA rate). Activations keep 8 significant bits, where the quantized dot products
//   keep int8 per block of 32 or 256 (measured: the tile path is the closer of the two to
//   float64); the dequantized weights are rounded to bf16 (2^-9 relative).
// - at the avx2 level (no AVX-512: no bf16 dot instruction, no oneDNN brgemm), Q8_0 and Q4_K
//   weights take int8 tiles instead (int8_tiles.h): activations in the dot products' Q8_0 / Q8_K
//   and integer products over register-blocked rows x tokens, so results equal the dot products'
//   up to the order of f32 additions. The other types keep the dot products there.
// Which path runs for how many tokens is decided per weight type and ISA level by
// tandem-kernel-bench (see tile_gemm_min_tokens); the bf16 and f32 tiles need the avx512 ISA level
// (AVX-512 BF16) and oneDNN's brgemm.
#pragma once

#include <cstdint>

#include "kernels/cpu/vec_dot.h"
#include "kernels/dtype.h"

namespace tandem::cpu {

enum class TileGemmPolicy {
    Auto,    // from tile_gemm_min_tokens tokens up, where available (the default)
    Never,   // always the dot-product kernels
    Always,  // whenever available, from one token (tests and the benchmark's side-by-side rows)
};

// Process-wide; not thread-safe with running kernels (call it between steps, like force_isa).
void set_tile_gemm_policy(TileGemmPolicy policy);
TileGemmPolicy tile_gemm_policy();

// Batch-invariant kernels: every row of a product is computed by the same arithmetic whatever
// the number of tokens beside it — no tile path, and no several-row dots for one token (they
// sum in another order than the per-row dot products). For EngineConfig.batch_invariant;
// process-wide like the policy.
void set_batch_invariant_kernels(bool on);
bool batch_invariant_kernels();

// Tokens per pass of the dot products over a weight row: kMaxDotTokens, or 1 when batch-invariant
// (the quantized several-token dots do not sum a token's blocks in the order the one-token dot
// does).
int dot_tokens_per_pass();

// The several-row dot for `weight_type` (vec_dot.h), or null where there is none or the kernels
// are batch-invariant.
RowsDotFn one_token_row_dots(const VecDotKernels& kernels, DType weight_type);

// F32 for f32, f16 and bf16 weights, BF16 for the block-quantized types; at the avx2 level,
// vec_dot_type (Q8_0, Q8_K) for the types with int8 tiles.
DType tile_gemm_activation_type(DType weight_type);

// n f32 activations in `type` (F32: a copy, BF16: rounded to nearest even, Q8_0 / Q8_K:
// quantize_activation) at out.
void to_tile_activations(const float* x, DType type, void* out, int64_t n);

// Whether the tile path can run `weight_type` on this CPU at the active ISA.
bool tile_gemm_available(DType weight_type);

// Fewest tokens per weight matrix for which Auto takes the tile path.
int64_t tile_gemm_min_tokens(DType weight_type);

// Whether a product of `n_tokens` rows with weights of `weight_type` takes the tile path.
bool use_tile_gemm(DType weight_type, int64_t n_tokens);

// Weight rows per tile for an input dimension k of a weight type: the tile stays within
// ~256 KB of L2; 16 to 128 rows.
int64_t tile_gemm_rows(DType weight_type, int64_t k);

// y[m, n_rows] (dense f32, overwritten) = a[m, k] · w_rowsᵀ, where a is dense in
// tile_gemm_activation_type(weight_type) and w_rows are n_rows consecutive rows of a [*, k]
// weight matrix of `weight_type`. Runs on the calling thread (one task of a pool job); the
// converted tile lives in a per-thread buffer (f32 weights are used in place).
void tile_gemm(const void* a, int64_t m, const void* w_rows, DType weight_type, int64_t n_rows,
               int64_t k, float* y);

// Rows of a weight matrix to bf16: n_rows rows of k elements of a block-quantized type.
void weight_rows_to_bf16(const void* w_rows, DType weight_type, int64_t n_rows, int64_t k,
                         uint16_t* out);

}  // namespace tandem::cpu
