// Weight rows to bf16 tiles with AVX-512 BF16, for the tile path of tile_gemm.h: the formats
// that large models ship in (Q8_0, Q4_K) get a vector dequantizer; compiled for the avx512 level
// only (flags in kernels/CMakeLists.txt) and called only when that level is active. Each value is
// formed in f32 exactly as dequantize_row does, then rounded to bf16 (nearest even).
#include "kernels/cpu/bf16_tiles.h"

#include <immintrin.h>

#include "kernels/cpu/quant.h"

namespace tandem::cpu::avx512 {

// GCC 12 warns that the widening intrinsics (_mm512_cvtepi8_epi32 and kin) read an
// uninitialized register: a false positive inside its own headers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

// 32 f32 values (lo: elements 0..15, hi: 16..31) to bf16 at out.
[[gnu::always_inline]] inline void store_bf16x32(__m512 lo, __m512 hi, uint16_t* out) {
    _mm512_storeu_si512(out, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

float f16(uint16_t bits) {
    return _cvtsh_ss(bits);
}

void q8_0_row(const BlockQ8_0* x, int64_t n_blocks, uint16_t* out) {
    for (int64_t b = 0; b < n_blocks; ++b, out += kQK) {
        const __m512 d = _mm512_set1_ps(f16(x[b].d));
        const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs));
        const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs + 16));
        store_bf16x32(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo))),
                      _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi))), out);
    }
}

// 32 four-bit values (16 bytes of nibbles, already masked/shifted to 0..15) times scale minus min.
[[gnu::always_inline]] inline __m512 k4_values(__m128i nibbles, __m512 scale, __m512 min) {
    return _mm512_fmsub_ps(scale, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(nibbles)), min);
}

void q4_k_row(const BlockQ4_K* x, int64_t n_blocks, uint16_t* out) {
    const __m128i low_mask = _mm_set1_epi8(0x0F);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float d = f16(x[b].d), dmin = f16(x[b].dmin);
        for (int chunk = 0; chunk < 4; ++chunk, out += 64) {
            uint8_t sc_lo, m_lo, sc_hi, m_hi;
            get_scale_min_k4(2 * chunk, x[b].scales, &sc_lo, &m_lo);
            get_scale_min_k4(2 * chunk + 1, x[b].scales, &sc_hi, &m_hi);
            const __m512 s0 = _mm512_set1_ps(d * float(sc_lo)), n0 = _mm512_set1_ps(dmin * m_lo);
            const __m512 s1 = _mm512_set1_ps(d * float(sc_hi)), n1 = _mm512_set1_ps(dmin * m_hi);
            const uint8_t* q = x[b].qs + 32 * chunk;
            const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
            const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
            // Low nibbles: sub-block 2 * chunk; high nibbles: 2 * chunk + 1.
            store_bf16x32(k4_values(_mm_and_si128(a, low_mask), s0, n0),
                          k4_values(_mm_and_si128(c, low_mask), s0, n0), out);
            store_bf16x32(k4_values(_mm_and_si128(_mm_srli_epi16(a, 4), low_mask), s1, n1),
                          k4_values(_mm_and_si128(_mm_srli_epi16(c, 4), low_mask), s1, n1),
                          out + 32);
        }
    }
}

}  // namespace

bool rows_to_bf16(const void* rows, DType type, int64_t n_rows, int64_t k, uint16_t* out) {
    const int64_t bytes = row_bytes(type, k);
    const auto* in = static_cast<const std::byte*>(rows);
    for (int64_t r = 0; r < n_rows; ++r, in += bytes, out += k) {
        switch (type) {
            case DType::Q8_0: q8_0_row(reinterpret_cast<const BlockQ8_0*>(in), k / kQK, out); break;
            case DType::Q4_K:
                q4_k_row(reinterpret_cast<const BlockQ4_K*>(in), k / kQKK, out);
                break;
            default: return false;
        }
    }
    return true;
}

#pragma GCC diagnostic pop

}  // namespace tandem::cpu::avx512
