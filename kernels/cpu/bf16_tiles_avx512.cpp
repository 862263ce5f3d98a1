// Weight rows to bf16 tiles with AVX-512 BF16, for the tile path of tile_gemm.h: a vector
// dequantizer for every block-quantized weight type (Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K, MXFP4).
// Compiled for the avx512 level only (flags in kernels/CMakeLists.txt) and called only when that
// level is active. Each value is formed in f32 as dequantize_row forms it (the K-quants' scale *
// q - min with one fused multiply-subtract), then rounded to bf16 (nearest even).
#include "kernels/cpu/bf16_tiles.h"

#include <immintrin.h>

#include <cstring>
#include <type_traits>

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

// Q4_K (qh == nullptr) and Q5_K rows: as dequantize_k4, chunk c of 64 values takes the low
// nibbles of its 32 bytes for sub-block 2c and the high nibbles for 2c + 1; Q5_K adds bit 2c
// (or 2c + 1) of qh[l] as the fifth bit of value l.
template <class Block>
void k4_row(const Block* x, int64_t n_blocks, uint16_t* out) {
    const __m128i low_mask = _mm_set1_epi8(0x0F), one = _mm_set1_epi8(1);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float d = f16(x[b].d), dmin = f16(x[b].dmin);
        __m128i h0 = _mm_setzero_si128(), h1 = _mm_setzero_si128();
        if constexpr (std::is_same_v<Block, BlockQ5_K>) {
            h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qh));
            h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qh + 16));
        }
        // The fifth bits of sub-block `bit` as 16 in each byte (0 for Q4_K).
        const auto fifth = [&](__m128i h, int bit) {
            return _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, bit), one), 4);
        };
        for (int chunk = 0; chunk < 4; ++chunk, out += 64) {
            uint8_t sc_lo, m_lo, sc_hi, m_hi;
            get_scale_min_k4(2 * chunk, x[b].scales, &sc_lo, &m_lo);
            get_scale_min_k4(2 * chunk + 1, x[b].scales, &sc_hi, &m_hi);
            const __m512 s0 = _mm512_set1_ps(d * float(sc_lo)), n0 = _mm512_set1_ps(dmin * m_lo);
            const __m512 s1 = _mm512_set1_ps(d * float(sc_hi)), n1 = _mm512_set1_ps(dmin * m_hi);
            const uint8_t* q = x[b].qs + 32 * chunk;
            const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
            const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
            const int lo_bit = 2 * chunk, hi_bit = 2 * chunk + 1;
            store_bf16x32(
                k4_values(_mm_or_si128(_mm_and_si128(a, low_mask), fifth(h0, lo_bit)), s0, n0),
                k4_values(_mm_or_si128(_mm_and_si128(c, low_mask), fifth(h1, lo_bit)), s0, n0),
                out);
            store_bf16x32(k4_values(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), low_mask),
                                                 fifth(h0, hi_bit)),
                                    s1, n1),
                          k4_values(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), low_mask),
                                                 fifth(h1, hi_bit)),
                                    s1, n1),
                          out + 32);
        }
    }
}

// Q4_0 (qh == nullptr: values nibble - 8) and Q5_0 (nibble | fifth bit << 4, minus 16) rows, as
// dequantize_q4_0 / dequantize_q5_0: value j of a block is the low nibble of qs[j] (j < 16) or
// the high nibble of qs[j - 16], and bit j of qh its fifth bit.
template <class Block>
void q_0_row(const Block* x, int64_t n_blocks, uint16_t* out) {
    const __m128i low_mask = _mm_set1_epi8(0x0F);
    constexpr bool five = std::is_same_v<Block, BlockQ5_0>;
    const __m512i offset = _mm512_set1_epi32(five ? 16 : 8), sixteen = _mm512_set1_epi32(16);
    for (int64_t b = 0; b < n_blocks; ++b, out += kQK) {
        const __m512 d = _mm512_set1_ps(f16(x[b].d));
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs));
        __m512i lo = _mm512_cvtepu8_epi32(_mm_and_si128(q, low_mask));
        __m512i hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), low_mask));
        if constexpr (five) {
            uint32_t qh;
            std::memcpy(&qh, x[b].qh, sizeof(qh));
            lo = _mm512_mask_add_epi32(lo, __mmask16(qh & 0xFFFF), lo, sixteen);
            hi = _mm512_mask_add_epi32(hi, __mmask16(qh >> 16), hi, sixteen);
        }
        store_bf16x32(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, offset))),
                      _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, offset))), out);
    }
}

// MXFP4 rows, as dequantize_mxfp4: nibbles in Q4_0's order, each looked up in kMxfp4Doubled by
// a byte shuffle, times 2^(e - 128).
void mxfp4_row(const BlockMxfp4* x, int64_t n_blocks, uint16_t* out) {
    const __m128i low_mask = _mm_set1_epi8(0x0F);
    const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Doubled));
    for (int64_t b = 0; b < n_blocks; ++b, out += kQK) {
        const __m512 d = _mm512_set1_ps(mxfp4_half_scale(x[b].e));
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs));
        const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(q, low_mask));
        const __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), low_mask));
        store_bf16x32(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo))),
                      _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi))), out);
    }
}

// 32 six-bit values (as bytes 0..63) minus 32, times scale_lo for the first 16 and scale_hi for
// the last 16.
[[gnu::always_inline]] inline void q6_store(__m256i q, float scale_lo, float scale_hi,
                                            uint16_t* out) {
    const __m256i centred = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(centred)));
    const __m512 hi =
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(centred, 1)));
    store_bf16x32(_mm512_mul_ps(_mm512_set1_ps(scale_lo), lo),
                  _mm512_mul_ps(_mm512_set1_ps(scale_hi), hi), out);
}

// As dequantize_q6_k: per half of a block, element l of each quarter takes the low or high
// nibble of ql[l] or ql[l + 32] and two bits of qh[l]; 16 elements share a scale.
void q6_k_row(const BlockQ6_K* x, int64_t n_blocks, uint16_t* out) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float d = f16(x[b].d);
        for (int half = 0; half < 2; ++half, out += 128) {
            const uint8_t* ql = x[b].ql + 64 * half;
            const int8_t* sc = x[b].scales + 8 * half;
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
            const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
            const __m256i h =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qh + 32 * half));
            const auto high_bits = [&](int shift) {  // bits shift, shift + 1 of qh, moved to 4, 5
                return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, shift), low2), 4);
            };
            const __m256i q1 = _mm256_or_si256(_mm256_and_si256(a, low4), high_bits(0));
            const __m256i q2 = _mm256_or_si256(_mm256_and_si256(c, low4), high_bits(2));
            const __m256i q3 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), low4), high_bits(4));
            const __m256i q4 =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), low4), high_bits(6));
            q6_store(q1, d * float(sc[0]), d * float(sc[1]), out);
            q6_store(q2, d * float(sc[2]), d * float(sc[3]), out + 32);
            q6_store(q3, d * float(sc[4]), d * float(sc[5]), out + 64);
            q6_store(q4, d * float(sc[6]), d * float(sc[7]), out + 96);
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
            case DType::Q4_0: q_0_row(reinterpret_cast<const BlockQ4_0*>(in), k / kQK, out); break;
            case DType::Q5_0: q_0_row(reinterpret_cast<const BlockQ5_0*>(in), k / kQK, out); break;
            case DType::MXFP4:
                mxfp4_row(reinterpret_cast<const BlockMxfp4*>(in), k / kQK, out);
                break;
            case DType::Q4_K: k4_row(reinterpret_cast<const BlockQ4_K*>(in), k / kQKK, out); break;
            case DType::Q5_K: k4_row(reinterpret_cast<const BlockQ5_K*>(in), k / kQKK, out); break;
            case DType::Q6_K:
                q6_k_row(reinterpret_cast<const BlockQ6_K*>(in), k / kQKK, out);
                break;
            default: return false;
        }
    }
    return true;
}

#pragma GCC diagnostic pop

}  // namespace tandem::cpu::avx512
