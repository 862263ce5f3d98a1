// Int8 weight tiles times int8 activations with AVX2 (int8_tiles.h). Compiled for the avx2 level
// only (flags in kernels/CMakeLists.txt) and called only when that level is active; the
// functions that use AVX-VNNI (q8_0_vnni_kernel, q4_k_vnni_kernel) are compiled with it allowed and
// called only when avx_vnni_active().
//
// A tile is converted once, then every group of tokens walks it a few rows (or row blocks of 8
// interleaved rows) at a time: the weight tile stays in L2 and the tokens' activations in L1.
// Edge groups repeat the last valid row or token and drop the extra results (row blocks are
// padded with zero rows), so one instantiation serves every shape. Three layouts: Q8_0 in
// row-major groups of 8 blocks (vpmaddubsw, the sign trick), Q8_0 with 8 rows interleaved
// (AVX-VNNI), Q4_K with 8 rows interleaved (vpmaddubsw and int16 sums per sub-block, or
// AVX-VNNI's vpdpbusd and f32 scales per sub-block).
#include "kernels/cpu/int8_tiles.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/quant.h"
#include "kernels/error.h"

namespace tandem::cpu::avx2 {

namespace {

__m256i load_bytes(const void* p) {
    return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// An MXFP4 block's 32 values as bytes: e2m1 doubled, integers in [-12, 12] (kMxfp4Doubled),
// elements 0-15 from the low nibbles of its 16 bytes and 16-31 from the high ones. With its scale
// halved to an f32 (mxfp4_half_scale) they are a block of Q8_0's shape, and take Q8_0's tiles.
__m256i mxfp4_bytes(const BlockMxfp4& block) {
    const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Doubled));
    const __m128i low = _mm_set1_epi8(0x0F);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block.qs));
    return _mm256_set_m128i(_mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(packed, 4), low)),
                            _mm_shuffle_epi8(table, _mm_and_si128(packed, low)));
}

// A block's 32 values as bytes and its f32 scale: Q8_0's as stored, MXFP4's decoded.
void block_bytes(const BlockQ8_0& block, int8_t* q, float* d) {
    std::memcpy(q, block.qs, kQK);
    *d = _cvtsh_ss(block.d);
}
void block_bytes(const BlockMxfp4& block, int8_t* q, float* d) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), mxfp4_bytes(block));
    *d = mxfp4_half_scale(block.e);
}

// Rows and tokens of the Q8_0 inner loop: an int32 accumulator per pair, the tokens' activation
// vectors and one row's weight vectors within AVX2's 16 vector registers (the f32 accumulators,
// touched once per group, may live in memory). Of 2x3, 3x2 and 2x4, 2x3 was the fastest in
// tandem-kernel-bench --cpu-isa avx2 (linear q_proj at M = 64 and 512; a shared machine at load
// ~3.5, so by 10-25 %, roughly).
constexpr int kQ8Rows = 2, kQ8Tokens = 3;

// Blocks of Q8_0 (weights or activations) rearranged by groups of 8: vector v of a group (32
// bytes) holds bytes 4v..4v+3 of each of its 8 blocks, block b in 32-bit lane b. Then the
// products of a group accumulate with plain vector adds, lane b holding block b's sum, and the
// f32 scales apply once per group, 8 blocks at a time; no horizontal reductions. Blocks past the
// row's end are zero, scale 0.
struct Q8_0Groups {
    std::vector<int8_t> q;     // [rows, groups * 256]
    std::vector<uint8_t> mag;  // |q|, the unsigned operand of vpmaddubsw (weights only)
    std::vector<float> d;      // [rows, groups * 8]
};

template <class Block>
void interleave_q8_0(const Block* x, int64_t rows, int64_t nb, int64_t groups, bool magnitudes,
                     Q8_0Groups& out) {
    out.q.assign(size_t(rows * groups * 256), 0);
    out.d.assign(size_t(rows * groups * 8), 0.0f);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < nb; ++b) {
            int8_t q[kQK];
            block_bytes(x[r * nb + b], q, &out.d[size_t(r * groups * 8 + b)]);
            int8_t* group = out.q.data() + (r * groups + b / 8) * 256;
            for (int v = 0; v < 8; ++v)
                std::memcpy(group + v * 32 + (b % 8) * 4, q + 4 * v, 4);
        }
    if (!magnitudes) return;
    out.mag.resize(out.q.size());
    for (size_t i = 0; i < out.q.size(); i += 32)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.mag.data() + i),
                            _mm256_abs_epi8(load_bytes(out.q.data() + i)));
}

// sums + Σ over each 4-byte group of mag (u8) * x (s8), the Q8_0 tile product. |x| <= 127 and
// mag <= 128, so vpmaddubsw's pairs (<= 2 * 128 * 127) never saturate.
__m256i add_products(__m256i sums, __m256i mag, __m256i x) {
    return _mm256_add_epi32(sums,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(mag, x), _mm256_set1_epi16(1)));
}

// out[r][t] = weight row rows[r] . activation row tokens[t] over `groups` groups of 8 blocks.
// The sign trick: |w| is the unsigned operand, w's sign moves onto x (vpsignb). Without AVX-VNNI
// (with it, q8_0_vnni_kernel below).
void q8_0_kernel(const Q8_0Groups& w, const int64_t* rows, const Q8_0Groups& x,
                 const int64_t* tokens, int64_t groups, float out[kQ8Rows][kQ8Tokens]) {
    __m256 acc[kQ8Rows][kQ8Tokens];
    for (auto& row : acc)
        for (auto& v : row)
            v = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
        __m256i sums[kQ8Rows][kQ8Tokens];
        for (auto& row : sums)
            for (auto& v : row)
                v = _mm256_setzero_si256();
        for (int v = 0; v < 8; ++v) {
            __m256i xv[kQ8Tokens];
            for (int t = 0; t < kQ8Tokens; ++t)
                xv[t] = load_bytes(x.q.data() + (tokens[t] * groups + g) * 256 + v * 32);
            for (int r = 0; r < kQ8Rows; ++r) {
                const int64_t at = (rows[r] * groups + g) * 256 + v * 32;
                const __m256i q = load_bytes(w.q.data() + at);
                const __m256i mag = load_bytes(w.mag.data() + at);
                for (int t = 0; t < kQ8Tokens; ++t)
                    sums[r][t] = add_products(sums[r][t], mag, _mm256_sign_epi8(xv[t], q));
            }
        }
        for (int r = 0; r < kQ8Rows; ++r) {
            const __m256 dw = _mm256_loadu_ps(w.d.data() + (rows[r] * groups + g) * 8);
            for (int t = 0; t < kQ8Tokens; ++t) {
                const __m256 dx = _mm256_loadu_ps(x.d.data() + (tokens[t] * groups + g) * 8);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r][t]), _mm256_mul_ps(dw, dx),
                                            acc[r][t]);
            }
        }
    }
    for (int r = 0; r < kQ8Rows; ++r)
        for (int t = 0; t < kQ8Tokens; ++t)
            out[r][t] = hsum(acc[r][t]);
}

// Q8_0 or MXFP4 rows (`Block`) times Q8_0 activations, without AVX-VNNI.
template <class Block>
void q8_0_gemm(const void* acts, int64_t m, const void* w_rows, int64_t n_rows, int64_t k,
               float* y) {
    const int64_t nb = k / kQK, groups = (nb + 7) / 8;
    thread_local Q8_0Groups tile, x;
    interleave_q8_0(static_cast<const Block*>(w_rows), n_rows, nb, groups, true, tile);
    interleave_q8_0(static_cast<const BlockQ8_0*>(acts), m, nb, groups, false, x);
    for (int64_t t0 = 0; t0 < m; t0 += kQ8Tokens) {
        int64_t tokens[kQ8Tokens];
        for (int t = 0; t < kQ8Tokens; ++t)
            tokens[t] = std::min(t0 + t, m - 1);
        for (int64_t r0 = 0; r0 < n_rows; r0 += kQ8Rows) {
            int64_t rows[kQ8Rows];
            for (int r = 0; r < kQ8Rows; ++r)
                rows[r] = std::min(r0 + r, n_rows - 1);
            float out[kQ8Rows][kQ8Tokens];
            q8_0_kernel(tile, rows, x, tokens, groups, out);
            for (int t = 0; t < kQ8Tokens && t0 + t < m; ++t)
                for (int r = 0; r < kQ8Rows && r0 + r < n_rows; ++r)
                    y[(t0 + t) * n_rows + r0 + r] = out[r][t];
        }
    }
}

// Q4_K tiles interleave 8 rows, so that one vector holds the same 4 elements of 8 rows and each
// 32-bit lane of a result belongs to one row: a token's 4 activation bytes, broadcast, meet 8 rows
// in one vpmaddubsw; the sub-block scales, mins and f32 scales apply as vectors over the rows; and
// a token's 8 results are one store, with no horizontal sums. Within a sub-block of 32 elements the
// 8 vpmaddubsw results of a row block add in int16 (each lane at most 8 * 2 * 15 * 128 = 30720)
// before one vpmaddwd applies the scales, so a product of 32 multiplies costs a vpmaddubsw and a
// vpaddw, where row-major tiles (one row's sub-block per vector) needed a vpmaddwd each. With
// AVX-VNNI it is one vpdpbusd, and the scales apply in f32 once per sub-block (q4_k_vnni_kernel).
constexpr int kRowBlock = 8;

// 8 rows (a row block) times one super-block.
struct alignas(32) Q4_KRowBlock {
    uint8_t q[kQKK / 4][32];  // group g: bytes 4g..4g+3 of row r at 4r..4r+3 (values 0-15)
    int16_t scales[8][16];    // sub-block j: row r's scale in int16 lanes 2r and 2r + 1
    int16_t mins[4][16];      // sub-blocks 2p, 2p + 1: row r's mins in lanes 2r, 2r + 1
    float d[kRowBlock], dmin[kRowBlock];
    float scaled_d[8][kRowBlock];  // sub-block j: row r's scale times d (the AVX-VNNI kernel's)
};

// v[r] lane c becomes v[c] lane r (8 x 8 32-bit lanes).
[[gnu::always_inline]] inline void transpose_8x8(__m256i v[8]) {
    __m256i t[8], s[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    for (int h = 0; h < 2; ++h) {  // rows 0-3, then 4-7
        s[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
        s[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
        s[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        s[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
    for (int c = 0; c < 4; ++c) {
        v[c] = _mm256_permute2x128_si256(s[c], s[4 + c], 0x20);
        v[4 + c] = _mm256_permute2x128_si256(s[c], s[4 + c], 0x31);
    }
}

// A Q4_K block's 8 scales (bytes 0-7) and 8 mins (bytes 8-15) from its 12 packed bytes, as
// get_scale_min_k4 gives them: bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins
// 0-3; bytes 8-11 the low 4 bits of scales 4-7 (low nibbles) and mins 4-7 (high nibbles), whose
// top 2 bits are the top bits of bytes 0-3 and 4-7.
__m128i unpack_scales_mins(const uint8_t* packed) {
    uint32_t word[3];
    std::memcpy(word, packed, sizeof(word));
    const uint32_t scales03 = word[0] & 0x3f3f3f3fu, mins03 = word[1] & 0x3f3f3f3fu;
    const uint32_t scales47 = (word[2] & 0x0f0f0f0fu) | ((word[0] >> 2) & 0x30303030u);
    const uint32_t mins47 = ((word[2] >> 4) & 0x0f0f0f0fu) | ((word[1] >> 2) & 0x30303030u);
    return _mm_set_epi32(int(mins47), int(mins03), int(scales47), int(scales03));
}

// Rows [r0, r0 + 8) of w (n_rows rows of nb super-blocks) into nb row blocks; rows past n_rows are
// zero (scales 0: their results are 0 and dropped). Each sub-block of 8 rows is one transpose: a
// row's sub-block is 8 groups of 4 bytes, and the row block wants each group of all rows together.
void pack_q4_k_rows(const BlockQ4_K* w, int64_t n_rows, int64_t nb, int64_t r0, Q4_KRowBlock* out) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    const int rows = int(std::min<int64_t>(kRowBlock, n_rows - r0));
    for (int64_t i = 0; i < nb; ++i) {
        Q4_KRowBlock& t = out[i];
        for (int c = 0; c < 4; ++c) {  // 32 bytes of qs: sub-blocks 2c (low nibbles), 2c + 1
            __m256i lo[kRowBlock], hi[kRowBlock];
            for (int r = 0; r < kRowBlock; ++r) {
                const __m256i v = r < rows ? load_bytes(w[(r0 + r) * nb + i].qs + 32 * c)
                                           : _mm256_setzero_si256();
                lo[r] = _mm256_and_si256(v, low);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
            }
            transpose_8x8(lo);
            transpose_8x8(hi);
            for (int g = 0; g < 8; ++g) {
                _mm256_store_si256(reinterpret_cast<__m256i*>(t.q[16 * c + g]), lo[g]);
                _mm256_store_si256(reinterpret_cast<__m256i*>(t.q[16 * c + 8 + g]), hi[g]);
            }
        }
        // The rows' scales and mins as int32 lanes, row r in vector r, then transposed: vector j
        // holds sub-block j's of every row, which the kernels' layouts are made from.
        __m256i scales[kRowBlock], mins[kRowBlock];
        for (int r = 0; r < kRowBlock; ++r) {
            const __m128i unpacked =
                r < rows ? unpack_scales_mins(w[(r0 + r) * nb + i].scales) : _mm_setzero_si128();
            scales[r] = _mm256_cvtepu8_epi32(unpacked);
            mins[r] = _mm256_cvtepu8_epi32(_mm_srli_si128(unpacked, 8));
            t.d[r] = r < rows ? _cvtsh_ss(w[(r0 + r) * nb + i].d) : 0.0f;
            t.dmin[r] = r < rows ? _cvtsh_ss(w[(r0 + r) * nb + i].dmin) : 0.0f;
        }
        transpose_8x8(scales);
        transpose_8x8(mins);
        const __m256 d = _mm256_load_ps(t.d);
        for (int j = 0; j < 8; ++j) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(t.scales[j]),
                               _mm256_or_si256(scales[j], _mm256_slli_epi32(scales[j], 16)));
            _mm256_store_ps(t.scaled_d[j], _mm256_mul_ps(_mm256_cvtepi32_ps(scales[j]), d));
        }
        for (int p = 0; p < 4; ++p)
            _mm256_store_si256(
                reinterpret_cast<__m256i*>(t.mins[p]),
                _mm256_or_si256(mins[2 * p], _mm256_slli_epi32(mins[2 * p + 1], 16)));
    }
}

// Row blocks and tokens of one inner loop: an int16 and an int32 accumulator per pair, one row
// block's weight vector and one token's broadcast activation within 16 registers (measured
// against 1x4 and 2x2 in tandem-kernel-bench --cpu-isa avx2: bench/RESULTS.md 2026-12-06 (d)).
constexpr int kQ4Blocks = 2, kQ4Tokens = 3;

__m256i broadcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// A token's sub-block sums as int16 pairs (sub-blocks 2p, 2p + 1 in 32-bit lane p), broadcast,
// and its scale: what the mins' term of a super-block needs.
struct TokenPairs {
    __m256i pairs[4];
    __m256 d;
    explicit TokenPairs(const BlockQ8_K& x) : d(_mm256_set1_ps(x.d)) {
        const __m128i sums =
            _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.bsums)),
                           _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.bsums + 8)));
        pairs[0] = _mm256_broadcastd_epi32(sums);
        pairs[1] = _mm256_broadcastd_epi32(_mm_shuffle_epi32(sums, 0x55));
        pairs[2] = _mm256_broadcastd_epi32(_mm_shuffle_epi32(sums, 0xAA));
        pairs[3] = _mm256_broadcastd_epi32(_mm_shuffle_epi32(sums, 0xFF));
    }
};

// acc + d_x * (scaled - dmin * sum_j min_j * (sum of x over sub-block j)) for the 8 rows of w,
// where scaled holds each row's sum_j d * scale_j * (q . x)_j of the super-block.
[[gnu::always_inline]] inline __m256 add_super_block(__m256 acc, __m256 scaled,
                                                     const Q4_KRowBlock& w, const TokenPairs& x) {
    __m256i min_sums = _mm256_setzero_si256();
    for (int p = 0; p < 4; ++p)
        min_sums = _mm256_add_epi32(
            min_sums,
            _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(w.mins[p])),
                              x.pairs[p]));
    const __m256 sum =
        _mm256_fnmadd_ps(_mm256_cvtepi32_ps(min_sums), _mm256_load_ps(w.dmin), scaled);
    return _mm256_fmadd_ps(sum, x.d, acc);
}

// out[t][b] (8 floats: rows 8b..8b+7 of the block pair) = row block w[b] . token a[t] over nb
// super-blocks: per super-block, sum_j scale_j * (q . x)_j in int32 lanes (one per row), then
// d * d_x times that minus dmin * d_x * sum_j min_j * (sum of x over sub-block j).
void q4_k_kernel(const Q4_KRowBlock* const* w, const BlockQ8_K* const* a, int64_t nb,
                 __m256 out[kQ4Tokens][kQ4Blocks]) {
    __m256 acc[kQ4Tokens][kQ4Blocks];
    for (auto& token : acc)
        for (auto& v : token)
            v = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
        __m256i sums[kQ4Tokens][kQ4Blocks];
        for (auto& token : sums)
            for (auto& v : token)
                v = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) {
            __m256i part[kQ4Tokens][kQ4Blocks];
            for (auto& token : part)
                for (auto& v : token)
                    v = _mm256_setzero_si256();
            for (int g = 8 * j; g < 8 * j + 8; ++g) {
                __m256i q[kQ4Blocks];
                for (int b = 0; b < kQ4Blocks; ++b)
                    q[b] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w[b][i].q[g]));
                for (int t = 0; t < kQ4Tokens; ++t) {
                    const __m256i x = broadcast4(a[t][i].qs + 4 * g);
                    for (int b = 0; b < kQ4Blocks; ++b)
                        part[t][b] = _mm256_add_epi16(part[t][b], _mm256_maddubs_epi16(q[b], x));
                }
            }
            for (int b = 0; b < kQ4Blocks; ++b) {
                const __m256i scale =
                    _mm256_load_si256(reinterpret_cast<const __m256i*>(w[b][i].scales[j]));
                for (int t = 0; t < kQ4Tokens; ++t)
                    sums[t][b] = _mm256_add_epi32(sums[t][b], _mm256_madd_epi16(part[t][b], scale));
            }
        }
        for (int t = 0; t < kQ4Tokens; ++t) {
            const TokenPairs pairs(a[t][i]);
            for (int b = 0; b < kQ4Blocks; ++b)
                acc[t][b] = add_super_block(
                    acc[t][b],
                    _mm256_mul_ps(_mm256_cvtepi32_ps(sums[t][b]), _mm256_load_ps(w[b][i].d)),
                    w[b][i], pairs);
        }
    }
    for (int t = 0; t < kQ4Tokens; ++t)
        for (int b = 0; b < kQ4Blocks; ++b)
            out[t][b] = acc[t][b];
}

// q4_k_kernel with AVX-VNNI: a sub-block's products of a row block and token are 8 vpdpbusd into
// int32 lanes (at most 32 * 15 * 128, exact), converted once and multiplied by the rows' scale * d
// in f32, so a product of 32 multiplies is one instruction where vpmaddubsw needed a vpaddw too.
// Written out beside q4_k_kernel rather than as one template over the product: the template would
// be compiled with AVX-VNNI allowed for both, and GCC may then fuse q4_k_kernel's vpmaddwd + vpaddd
// into vpdpwssd, which CPUs without AVX-VNNI do not run.
#pragma GCC push_options
#pragma GCC target("avxvnni")
void q4_k_vnni_kernel(const Q4_KRowBlock* const* w, const BlockQ8_K* const* a, int64_t nb,
                      __m256 out[kQ4Tokens][kQ4Blocks]) {
    __m256 acc[kQ4Tokens][kQ4Blocks];
    for (auto& token : acc)
        for (auto& v : token)
            v = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
        __m256 scaled[kQ4Tokens][kQ4Blocks];
        for (auto& token : scaled)
            for (auto& v : token)
                v = _mm256_setzero_ps();
        for (int j = 0; j < 8; ++j) {
            __m256i sums[kQ4Tokens][kQ4Blocks];
            for (auto& token : sums)
                for (auto& v : token)
                    v = _mm256_setzero_si256();
            for (int g = 8 * j; g < 8 * j + 8; ++g) {
                __m256i q[kQ4Blocks];
                for (int b = 0; b < kQ4Blocks; ++b)
                    q[b] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w[b][i].q[g]));
                for (int t = 0; t < kQ4Tokens; ++t) {
                    const __m256i x = broadcast4(a[t][i].qs + 4 * g);
                    for (int b = 0; b < kQ4Blocks; ++b)
                        sums[t][b] = _mm256_dpbusd_avx_epi32(sums[t][b], q[b], x);
                }
            }
            for (int b = 0; b < kQ4Blocks; ++b) {
                const __m256 scale = _mm256_load_ps(w[b][i].scaled_d[j]);
                for (int t = 0; t < kQ4Tokens; ++t)
                    scaled[t][b] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[t][b]), scale, scaled[t][b]);
            }
        }
        for (int t = 0; t < kQ4Tokens; ++t) {
            const TokenPairs pairs(a[t][i]);
            for (int b = 0; b < kQ4Blocks; ++b)
                acc[t][b] = add_super_block(acc[t][b], scaled[t][b], w[b][i], pairs);
        }
    }
    for (int t = 0; t < kQ4Tokens; ++t)
        for (int b = 0; b < kQ4Blocks; ++b)
            out[t][b] = acc[t][b];
}
#pragma GCC pop_options

// The loop of the row-interleaved tiles: kernel(w, tokens, out) for every group of kTokens tokens
// (the last repeated to fill a group) and kBlocks row blocks of `tile` (nb blocks of RowBlock
// each), out[t][b] holding the 8 rows of row block b for token t; the valid rows are stored.
template <int kBlocks, int kTokens, class RowBlock, class Kernel>
void over_row_blocks(const RowBlock* tile, int64_t nb, int64_t n_rows, int64_t m, Kernel&& kernel,
                     float* y) {
    const int64_t n_blocks = (n_rows + kRowBlock - 1) / kRowBlock;
    for (int64_t t0 = 0; t0 < m; t0 += kTokens) {
        int64_t tokens[kTokens];
        for (int t = 0; t < kTokens; ++t)
            tokens[t] = std::min(t0 + t, m - 1);
        for (int64_t b0 = 0; b0 < n_blocks; b0 += kBlocks) {
            const RowBlock* w[kBlocks];
            for (int b = 0; b < kBlocks; ++b)
                w[b] = tile + std::min(b0 + b, n_blocks - 1) * nb;
            __m256 out[kTokens][kBlocks];
            kernel(w, tokens, out);
            for (int t = 0; t < kTokens && t0 + t < m; ++t)
                for (int b = 0; b < kBlocks && b0 + b < n_blocks; ++b) {
                    float* dst = y + (t0 + t) * n_rows + (b0 + b) * kRowBlock;
                    const int64_t valid =
                        std::min<int64_t>(kRowBlock, n_rows - (b0 + b) * kRowBlock);
                    if (valid == kRowBlock) {
                        _mm256_storeu_ps(dst, out[t][b]);
                    } else {
                        alignas(32) float row[kRowBlock];
                        _mm256_store_ps(row, out[t][b]);
                        std::copy_n(row, valid, dst);
                    }
                }
        }
    }
}

void q4_k_gemm(const void* acts, int64_t m, const void* w_rows, int64_t n_rows, int64_t k,
               float* y) {
    const int64_t nb = k / kQKK, n_blocks = (n_rows + kRowBlock - 1) / kRowBlock;
    thread_local std::vector<Q4_KRowBlock> tile;  // over-aligned: C++17 allocates it aligned
    tile.resize(size_t(n_blocks * nb));
    for (int64_t b = 0; b < n_blocks; ++b)
        pack_q4_k_rows(static_cast<const BlockQ4_K*>(w_rows), n_rows, nb, b * kRowBlock,
                       &tile[size_t(b * nb)]);
    const auto* x = static_cast<const BlockQ8_K*>(acts);
    const bool vnni = avx_vnni_active();
    over_row_blocks<kQ4Blocks, kQ4Tokens>(
        tile.data(), nb, n_rows, m,
        [&](const Q4_KRowBlock* const* w, const int64_t* tokens, __m256 out[kQ4Tokens][kQ4Blocks]) {
            const BlockQ8_K* a[kQ4Tokens];
            for (int t = 0; t < kQ4Tokens; ++t)
                a[t] = x + tokens[t] * nb;
            if (vnni)
                q4_k_vnni_kernel(w, a, nb, out);
            else
                q4_k_kernel(w, a, nb, out);
        },
        y);
}

// With AVX-VNNI, Q8_0 tiles interleave 8 rows as Q4_K's do, and a product of 32 multiplies is one
// vpdpbusd with no sign step: the weights are stored biased to unsigned bytes (q + 128), and
// 128 * (the sum of the token's block), taken once per token and block, is subtracted from each
// block's int32 sums. (Without AVX-VNNI this layout gains nothing: vpmaddubsw would saturate on
// biased weights, and the sign step per token and row stays; the row-major groups above remain.)
struct alignas(32) Q8_0RowBlock {
    uint8_t q[kQK / 4][32];  // group g: bytes 4g..4g+3 of row r, plus 128, at 4r..4r+3
    float d[kRowBlock];
};

void pack_q8_0_rows(const BlockQ8_0* w, int64_t n_rows, int64_t nb, int64_t r0, Q8_0RowBlock* out) {
    const __m256i bias = _mm256_set1_epi8(char(0x80));
    const int rows = int(std::min<int64_t>(kRowBlock, n_rows - r0));
    for (int64_t i = 0; i < nb; ++i) {
        Q8_0RowBlock& t = out[i];
        __m256i v[kRowBlock];
        for (int r = 0; r < kRowBlock; ++r) {
            // Missing rows: bytes of 0 (stored as 128) and a scale of 0.
            v[r] = _mm256_xor_si256(
                r < rows ? load_bytes(w[(r0 + r) * nb + i].qs) : _mm256_setzero_si256(), bias);
            t.d[r] = r < rows ? _cvtsh_ss(w[(r0 + r) * nb + i].d) : 0.0f;
        }
        transpose_8x8(v);
        for (int g = 0; g < kQK / 4; ++g)
            _mm256_store_si256(reinterpret_cast<__m256i*>(t.q[g]), v[g]);
    }
}

// MXFP4 rows take the same tiles, decoded by mxfp4_bytes.
void pack_mxfp4_rows(const BlockMxfp4* w, int64_t n_rows, int64_t nb, int64_t r0,
                     Q8_0RowBlock* out) {
    const __m256i bias = _mm256_set1_epi8(char(0x80));
    const int rows = int(std::min<int64_t>(kRowBlock, n_rows - r0));
    for (int64_t i = 0; i < nb; ++i) {
        Q8_0RowBlock& t = out[i];
        __m256i v[kRowBlock];
        for (int r = 0; r < kRowBlock; ++r) {
            const BlockMxfp4* block = r < rows ? &w[(r0 + r) * nb + i] : nullptr;
            v[r] = _mm256_xor_si256(block ? mxfp4_bytes(*block) : _mm256_setzero_si256(), bias);
            t.d[r] = block ? mxfp4_half_scale(block->e) : 0.0f;
        }
        transpose_8x8(v);
        for (int g = 0; g < kQK / 4; ++g)
            _mm256_store_si256(reinterpret_cast<__m256i*>(t.q[g]), v[g]);
    }
}

constexpr int kQ8VnniBlocks = 2, kQ8VnniTokens = 3;

// A token's blocks as the kernel reads them: the bytes, the f32 scale, 128 * the sum of the bytes.
struct Q8_0Token {
    const BlockQ8_0* blocks;
    const float* d;
    const int32_t* bias;
};

#pragma GCC push_options
#pragma GCC target("avxvnni")
void q8_0_vnni_kernel(const Q8_0RowBlock* const* w, const Q8_0Token* a, int64_t nb,
                      __m256 out[kQ8VnniTokens][kQ8VnniBlocks]) {
    __m256 acc[kQ8VnniTokens][kQ8VnniBlocks];
    for (auto& token : acc)
        for (auto& v : token)
            v = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
        __m256i sums[kQ8VnniTokens][kQ8VnniBlocks];
        for (int t = 0; t < kQ8VnniTokens; ++t)
            for (int b = 0; b < kQ8VnniBlocks; ++b)
                sums[t][b] = _mm256_set1_epi32(-a[t].bias[i]);
        for (int g = 0; g < kQK / 4; ++g) {
            __m256i q[kQ8VnniBlocks];
            for (int b = 0; b < kQ8VnniBlocks; ++b)
                q[b] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w[b][i].q[g]));
            for (int t = 0; t < kQ8VnniTokens; ++t) {
                const __m256i x = broadcast4(a[t].blocks[i].qs + 4 * g);
                for (int b = 0; b < kQ8VnniBlocks; ++b)
                    sums[t][b] = _mm256_dpbusd_avx_epi32(sums[t][b], q[b], x);
            }
        }
        for (int t = 0; t < kQ8VnniTokens; ++t) {
            const __m256 dx = _mm256_set1_ps(a[t].d[i]);
            for (int b = 0; b < kQ8VnniBlocks; ++b)
                acc[t][b] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[t][b]),
                                    _mm256_mul_ps(_mm256_load_ps(w[b][i].d), dx), acc[t][b]);
        }
    }
    for (int t = 0; t < kQ8VnniTokens; ++t)
        for (int b = 0; b < kQ8VnniBlocks; ++b)
            out[t][b] = acc[t][b];
}
#pragma GCC pop_options

// Q8_0 or MXFP4 rows (`Block`, packed by `pack`) times Q8_0 activations, with AVX-VNNI.
template <class Block>
void q8_0_vnni_gemm(const void* acts, int64_t m, const void* w_rows, int64_t n_rows, int64_t k,
                    void (*pack)(const Block*, int64_t, int64_t, int64_t, Q8_0RowBlock*),
                    float* y) {
    const int64_t nb = k / kQK, n_blocks = (n_rows + kRowBlock - 1) / kRowBlock;
    thread_local std::vector<Q8_0RowBlock> tile;
    tile.resize(size_t(n_blocks * nb));
    for (int64_t b = 0; b < n_blocks; ++b)
        pack(static_cast<const Block*>(w_rows), n_rows, nb, b * kRowBlock, &tile[size_t(b * nb)]);
    // The tokens' scales and bias terms, once per call.
    const auto* x = static_cast<const BlockQ8_0*>(acts);
    thread_local std::vector<float> d;
    thread_local std::vector<int32_t> bias;
    d.resize(size_t(m * nb));
    bias.resize(size_t(m * nb));
    const __m256i ones = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < m * nb; ++i) {
        d[size_t(i)] = _cvtsh_ss(x[i].d);
        const __m256i pairs = _mm256_maddubs_epi16(ones, load_bytes(x[i].qs));
        const __m256i sums = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
        bias[size_t(i)] = 128 * _mm_cvtsi128_si32(s);
    }
    over_row_blocks<kQ8VnniBlocks, kQ8VnniTokens>(
        tile.data(), nb, n_rows, m,
        [&](const Q8_0RowBlock* const* w, const int64_t* tokens,
            __m256 out[kQ8VnniTokens][kQ8VnniBlocks]) {
            Q8_0Token a[kQ8VnniTokens];
            for (int t = 0; t < kQ8VnniTokens; ++t)
                a[t] = {x + tokens[t] * nb, d.data() + tokens[t] * nb,
                        bias.data() + tokens[t] * nb};
            q8_0_vnni_kernel(w, a, nb, out);
        },
        y);
}

}  // namespace

bool int8_tiles_support(DType type) {
    return type == DType::Q8_0 || type == DType::Q4_K || type == DType::MXFP4;
}

void int8_tile_gemm(const void* acts, int64_t m, const void* w_rows, DType type, int64_t n_rows,
                    int64_t k, float* y) {
    if (m <= 0 || n_rows <= 0) return;
    switch (type) {
        case DType::Q8_0:
            return avx_vnni_active()
                       ? q8_0_vnni_gemm<BlockQ8_0>(acts, m, w_rows, n_rows, k, pack_q8_0_rows, y)
                       : q8_0_gemm<BlockQ8_0>(acts, m, w_rows, n_rows, k, y);
        case DType::MXFP4:
            return avx_vnni_active()
                       ? q8_0_vnni_gemm<BlockMxfp4>(acts, m, w_rows, n_rows, k, pack_mxfp4_rows, y)
                       : q8_0_gemm<BlockMxfp4>(acts, m, w_rows, n_rows, k, y);
        case DType::Q4_K: return q4_k_gemm(acts, m, w_rows, n_rows, k, y);
        default: fail("int8_tile_gemm: no int8 tiles for ", dtype_name(type));
    }
}

}  // namespace tandem::cpu::avx2
