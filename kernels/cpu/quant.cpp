#include "kernels/cpu/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/error.h"

namespace tandem::cpu {

namespace {

constexpr float kGroupMaxEps = 1e-15f;

// Round half to even, as ggml's nearest_int (a float magic-number trick) does.
int nearest_int(float x) {
    return int(std::lrintf(x));
}

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, x += kQK) {
        float amax = 0.0f;
        for (int j = 0; j < kQK; ++j)
            amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < kQK; ++j)
            y[b].qs[j] = int8_t(std::roundf(x[j] * id));
    }
}

// The value of largest magnitude in a block of kQK, sign kept (the first of equals, as ggml).
float signed_absmax(const float* x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    }
    return max;
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, x += kQK) {
        const float max = signed_absmax(x);
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < kQK / 2; ++j) {
            const uint8_t lo = uint8_t(std::min(15, int(int8_t(x[j] * id + 8.5f))));
            const uint8_t hi = uint8_t(std::min(15, int(int8_t(x[j + kQK / 2] * id + 8.5f))));
            y[b].qs[j] = uint8_t(lo | (hi << 4));
        }
    }
}

void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, x += kQK) {
        const float max = signed_absmax(x);
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < kQK / 2; ++j) {
            const int lo = std::min(31, int(int8_t(x[j] * id + 16.5f)));
            const int hi = std::min(31, int(int8_t(x[j + kQK / 2] * id + 16.5f)));
            y[b].qs[j] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
            qh |= uint32_t((lo & 0x10) >> 4) << j;
            qh |= uint32_t((hi & 0x10) >> 4) << (j + kQK / 2);
        }
        std::memcpy(y[b].qh, &qh, sizeof(qh));
    }
}

// ggml's make_qkx2_quants: a scale and a min for n values with weights, searched over nstep
// candidate scales around the min-max one, minimising the weighted squared error.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        min = std::min(min, x[i]);
        max = std::max(max, x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        std::fill_n(L, n, uint8_t{0});
        *the_min = -min;
        return 0.0f;
    }
    float iscale = float(nmax) / (max - min);
    float scale = 1.0f / iscale;
    float best_error = 0.0f;
    for (int i = 0; i < n; ++i) {
        L[i] = uint8_t(std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax));
        const float diff = scale * L[i] + min - x[i];
        best_error += weights[i] * diff * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = uint8_t(l);
            sum_l += weights[i] * float(l);
            sum_l2 += weights[i] * float(l * l);
            sum_xl += weights[i] * float(l) * x[i];
        }
        const float det = sum_w * sum_l2 - sum_l * sum_l;
        if (det <= 0) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float error = 0;
        for (int i = 0; i < n; ++i) {
            const float diff = this_scale * Laux[i] + this_min - x[i];
            error += weights[i] * diff * diff;
        }
        if (error < best_error) {
            std::copy_n(Laux, n, L);
            best_error = error;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

// ggml's make_qx_quants with rmse_type 1 (weights x^2): a signed scale for n values in
// [-nmax, nmax - 1], refined over 18 nearby scales.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            max = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        std::fill_n(L, n, int8_t{0});
        return 0.0f;
    }
    auto fit = [&](float iscale, float* sum_lx, float* sum_l2) {
        *sum_lx = *sum_l2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            *sum_lx += w * x[i] * float(l);
            *sum_l2 += w * float(l * l);
        }
    };
    auto assign = [&](float iscale) {
        for (int i = 0; i < n; ++i)
            L[i] = int8_t(nmax + std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
    };
    float iscale = -float(nmax) / max, sum_lx, sum_l2;
    fit(iscale, &sum_lx, &sum_l2);
    assign(iscale);
    float scale = sum_l2 != 0 ? sum_lx / sum_l2 : 0.0f;
    float best = scale * sum_lx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(float(nmax) + 0.1f * float(is)) / max;
        fit(iscale, &sum_lx, &sum_l2);
        if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
            assign(iscale);
            scale = sum_lx / sum_l2;
            best = scale * sum_lx;
        }
    }
    return scale;
}

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per sub-block scales and mins, requantized to
// 6 bits against the super-block's f16 scales; returns the final quant levels in L.
void quantize_k_scales(const float* x, int nmax, float rmin, int nstep, uint16_t* d_out,
                       uint16_t* dmin_out, uint8_t* scales_out, uint8_t* L) {
    float weights[32], mins[8], scales[8];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l)
            weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                     rmin, 0.1f, nstep);
        max_scale = std::max(max_scale, scales[j]);
        max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    std::memset(scales_out, 0, 12);
    for (int j = 0; j < 8; ++j) {
        const uint8_t ls = uint8_t(std::min(63, nearest_int(inv_scale * scales[j])));
        const uint8_t lm = uint8_t(std::min(63, nearest_int(inv_min * mins[j])));
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= uint8_t((ls >> 4) << 6);
            scales_out[j] |= uint8_t((lm >> 4) << 6);
        }
    }
    *d_out = f32_to_f16(max_scale / 63.f);
    *dmin_out = f32_to_f16(max_min / 63.f);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales_out, &sc, &m);
        const float d = f16_to_f32(*d_out) * sc;
        if (d == 0.0f) continue;
        const float dm = f16_to_f32(*dmin_out) * m;
        for (int i = 0; i < 32; ++i)
            L[32 * j + i] = uint8_t(std::clamp(nearest_int((x[32 * j + i] + dm) / d), 0, nmax));
    }
}

void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t n_blocks) {
    uint8_t L[kQKK];
    for (int64_t b = 0; b < n_blocks; ++b, x += kQKK) {
        quantize_k_scales(x, 15, -1.0f, 20, &y[b].d, &y[b].dmin, y[b].scales, L);
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l)
                y[b].qs[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + l + 32] << 4));
    }
}

void quantize_q5_k(const float* x, BlockQ5_K* y, int64_t n_blocks) {
    uint8_t L[kQKK];
    for (int64_t b = 0; b < n_blocks; ++b, x += kQKK) {
        quantize_k_scales(x, 31, -0.5f, 15, &y[b].d, &y[b].dmin, y[b].scales, L);
        std::memset(y[b].qh, 0, sizeof(y[b].qh));
        for (int c = 0; c < 4; ++c) {
            for (int l = 0; l < 32; ++l) {
                int lo = L[64 * c + l], hi = L[64 * c + l + 32];
                if (lo > 15) {
                    lo -= 16;
                    y[b].qh[l] |= uint8_t(1 << (2 * c));
                }
                if (hi > 15) {
                    hi -= 16;
                    y[b].qh[l] |= uint8_t(1 << (2 * c + 1));
                }
                y[b].qs[32 * c + l] = uint8_t(lo | (hi << 4));
            }
        }
    }
}

void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t n_blocks) {
    int8_t L[kQKK];
    float scales[kQKK / 16];
    for (int64_t b = 0; b < n_blocks; ++b, x += kQKK) {
        float max_scale = 0, max_abs_scale = 0;
        for (int g = 0; g < kQKK / 16; ++g) {
            scales[g] = make_qx_quants(16, 32, x + 16 * g, L + 16 * g);
            if (std::fabs(scales[g]) > max_abs_scale) {
                max_abs_scale = std::fabs(scales[g]);
                max_scale = scales[g];
            }
        }
        std::memset(&y[b], 0, sizeof(BlockQ6_K));
        if (max_abs_scale < kGroupMaxEps) continue;
        const float iscale = -128.f / max_scale;
        y[b].d = f32_to_f16(1 / iscale);
        for (int g = 0; g < kQKK / 16; ++g)
            y[b].scales[g] = int8_t(std::min(127, nearest_int(iscale * scales[g])));
        for (int g = 0; g < kQKK / 16; ++g) {
            const float d = f16_to_f32(y[b].d) * y[b].scales[g];
            if (d == 0.0f) continue;
            for (int i = 0; i < 16; ++i)
                L[16 * g + i] = int8_t(std::clamp(nearest_int(x[16 * g + i] / d), -32, 31) + 32);
        }
        for (int half = 0; half < 2; ++half) {
            const int8_t* l = L + 128 * half;
            uint8_t* ql = y[b].ql + 64 * half;
            uint8_t* qh = y[b].qh + 32 * half;
            for (int i = 0; i < 32; ++i) {
                ql[i] = uint8_t((l[i] & 0xF) | ((l[i + 64] & 0xF) << 4));
                ql[i + 32] = uint8_t((l[i + 32] & 0xF) | ((l[i + 96] & 0xF) << 4));
                qh[i] = uint8_t((l[i] >> 4) | ((l[i + 32] >> 4) << 2) | ((l[i + 64] >> 4) << 4) |
                                ((l[i + 96] >> 4) << 6));
            }
        }
    }
}

void quantize_q8_k(const float* x, BlockQ8_K* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, x += kQKK) {
        float amax = 0;
        for (int j = 0; j < kQKK; ++j)
            amax = std::max(amax, std::fabs(x[j]));
        // Symmetric [-127, 127]: the VNNI kernels multiply these as signed bytes.
        const float iscale = amax != 0 ? 127.f / amax : 0.f;
        for (int j = 0; j < kQKK; ++j)
            y[b].qs[j] = int8_t(nearest_int(iscale * x[j]));
        for (int g = 0; g < kQKK / 16; ++g) {
            int sum = 0;
            for (int i = 0; i < 16; ++i)
                sum += y[b].qs[16 * g + i];
            y[b].bsums[g] = int16_t(sum);
        }
        y[b].d = amax != 0 ? 1 / iscale : 0.f;
    }
}

void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, y += kQK) {
        const float d = f16_to_f32(x[b].d);
        for (int j = 0; j < kQK; ++j)
            y[j] = d * float(x[b].qs[j]);
    }
}

// The nibble of the e2m1 value nearest to v (already divided by the block scale, |v| <= 6).
// Ties go to the even mantissa, as round-to-nearest-even does for the exact grid points'
// midpoints (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4).
uint8_t e2m1_nibble(float v) {
    static constexpr float kMagnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const float a = std::fabs(v);
    int best = 0;
    for (int i = 1; i < 8; ++i) {
        const float here = std::fabs(a - kMagnitudes[i]), there = std::fabs(a - kMagnitudes[best]);
        if (here < there || (here == there && (i & 1) == 0)) best = i;
    }
    return uint8_t(best | (std::signbit(v) && best != 0 ? 8 : 0));
}

void quantize_mxfp4(const float* x, BlockMxfp4* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, x += kQK) {
        float amax = 0.0f;
        for (int j = 0; j < kQK; ++j)
            amax = std::max(amax, std::fabs(x[j]));
        // The smallest e with amax / 2^(e - 127) <= 6, clamped to what e8m0 holds.
        int e = 0;
        if (amax > 0.0f && std::isfinite(amax)) {
            e = int(std::ceil(std::log2(double(amax) / 6.0))) + 127;
            if (std::ldexp(6.0, e - 127) < double(amax)) ++e;  // log2 rounding at the edge
            e = std::clamp(e, 0, 254);
        }
        y[b].e = uint8_t(e);
        const double inv = std::ldexp(1.0, 127 - e);
        for (int j = 0; j < kQK / 2; ++j) {
            const uint8_t lo = e2m1_nibble(float(x[j] * inv));
            const uint8_t hi = e2m1_nibble(float(x[j + kQK / 2] * inv));
            y[b].qs[j] = uint8_t(lo | (hi << 4));
        }
    }
}

void dequantize_mxfp4(const BlockMxfp4* x, float* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, y += kQK) {
        const float d = mxfp4_half_scale(x[b].e);
        for (int j = 0; j < kQK / 2; ++j) {
            y[j] = d * float(kMxfp4Doubled[x[b].qs[j] & 0xF]);
            y[j + kQK / 2] = d * float(kMxfp4Doubled[x[b].qs[j] >> 4]);
        }
    }
}

void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, y += kQK) {
        const float d = f16_to_f32(x[b].d);
        for (int j = 0; j < kQK / 2; ++j) {
            y[j] = d * float((x[b].qs[j] & 0xF) - 8);
            y[j + kQK / 2] = d * float((x[b].qs[j] >> 4) - 8);
        }
    }
}

void dequantize_q5_0(const BlockQ5_0* x, float* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, y += kQK) {
        const float d = f16_to_f32(x[b].d);
        uint32_t qh;
        std::memcpy(&qh, x[b].qh, sizeof(qh));
        for (int j = 0; j < kQK / 2; ++j) {
            const int lo = (x[b].qs[j] & 0xF) | int(((qh >> j) & 1u) << 4);
            const int hi = (x[b].qs[j] >> 4) | int(((qh >> (j + kQK / 2)) & 1u) << 4);
            y[j] = d * float(lo - 16);
            y[j + kQK / 2] = d * float(hi - 16);
        }
    }
}

// Q4_K and Q5_K: qh == nullptr for Q4_K.
void dequantize_k4(const uint16_t d16, const uint16_t dmin16, const uint8_t* scales,
                   const uint8_t* qh, const uint8_t* qs, float* y) {
    const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales, &sc, &m);
        const uint8_t* q = qs + 32 * (j / 2);
        const int shift = (j % 2) * 4;
        for (int l = 0; l < 32; ++l) {
            int v = (q[l] >> shift) & 0xF;
            if (qh != nullptr) v |= ((qh[l] >> j) & 1) << 4;
            y[32 * j + l] = d * float(sc) * float(v) - dmin * float(m);
        }
    }
}

void dequantize_q6_k(const BlockQ6_K* x, float* y, int64_t n_blocks) {
    for (int64_t b = 0; b < n_blocks; ++b, y += kQKK) {
        const float d = f16_to_f32(x[b].d);
        for (int half = 0; half < 2; ++half) {
            const uint8_t* ql = x[b].ql + 64 * half;
            const uint8_t* qh = x[b].qh + 32 * half;
            const int8_t* sc = x[b].scales + 8 * half;
            float* out = y + 128 * half;
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                out[l] = d * float(sc[is]) * float(q1);
                out[l + 32] = d * float(sc[is + 2]) * float(q2);
                out[l + 64] = d * float(sc[is + 4]) * float(q3);
                out[l + 96] = d * float(sc[is + 6]) * float(q4);
            }
        }
    }
}

void check_row(DType type, int64_t n) {
    const int64_t block = dtype_block_size(type);
    if (block == 1) fail("quantize: ", dtype_name(type), " is not a block-quantized type");
    if (n % block != 0)
        fail("quantize: a row of ", n, " elements is not a multiple of the ", dtype_name(type),
             " block of ", block);
}

}  // namespace

void quantize_row(DType type, const float* x, void* out, int64_t n) {
    check_row(type, n);
    const int64_t blocks = n / dtype_block_size(type);
    switch (type) {
        case DType::Q8_0: return quantize_q8_0(x, static_cast<BlockQ8_0*>(out), blocks);
        case DType::Q4_0: return quantize_q4_0(x, static_cast<BlockQ4_0*>(out), blocks);
        case DType::Q5_0: return quantize_q5_0(x, static_cast<BlockQ5_0*>(out), blocks);
        case DType::MXFP4: return quantize_mxfp4(x, static_cast<BlockMxfp4*>(out), blocks);
        case DType::Q4_K: return quantize_q4_k(x, static_cast<BlockQ4_K*>(out), blocks);
        case DType::Q5_K: return quantize_q5_k(x, static_cast<BlockQ5_K*>(out), blocks);
        case DType::Q6_K: return quantize_q6_k(x, static_cast<BlockQ6_K*>(out), blocks);
        case DType::Q8_K: return quantize_q8_k(x, static_cast<BlockQ8_K*>(out), blocks);
        default: fail("quantize: unsupported type ", dtype_name(type));
    }
}

void dequantize_row(DType type, const void* in, float* out, int64_t n) {
    check_row(type, n);
    const int64_t blocks = n / dtype_block_size(type);
    switch (type) {
        case DType::Q8_0: return dequantize_q8_0(static_cast<const BlockQ8_0*>(in), out, blocks);
        case DType::Q4_0: return dequantize_q4_0(static_cast<const BlockQ4_0*>(in), out, blocks);
        case DType::Q5_0: return dequantize_q5_0(static_cast<const BlockQ5_0*>(in), out, blocks);
        case DType::MXFP4: return dequantize_mxfp4(static_cast<const BlockMxfp4*>(in), out, blocks);
        case DType::Q4_K: {
            const auto* x = static_cast<const BlockQ4_K*>(in);
            for (int64_t b = 0; b < blocks; ++b)
                dequantize_k4(x[b].d, x[b].dmin, x[b].scales, nullptr, x[b].qs, out + b * kQKK);
            return;
        }
        case DType::Q5_K: {
            const auto* x = static_cast<const BlockQ5_K*>(in);
            for (int64_t b = 0; b < blocks; ++b)
                dequantize_k4(x[b].d, x[b].dmin, x[b].scales, x[b].qh, x[b].qs, out + b * kQKK);
            return;
        }
        case DType::Q6_K: return dequantize_q6_k(static_cast<const BlockQ6_K*>(in), out, blocks);
        case DType::Q8_K: {
            const auto* x = static_cast<const BlockQ8_K*>(in);
            for (int64_t b = 0; b < blocks; ++b)
                for (int j = 0; j < kQKK; ++j)
                    out[b * kQKK + j] = x[b].d * float(x[b].qs[j]);
            return;
        }
        default: fail("dequantize: unsupported type ", dtype_name(type));
    }
}

DType vec_dot_type(DType weight_type) {
    switch (weight_type) {
        case DType::Q8_0:
        case DType::Q5_0:
        case DType::Q4_0:
        case DType::MXFP4: return DType::Q8_0;
        case DType::Q4_K:
        case DType::Q5_K:
        case DType::Q6_K: return DType::Q8_K;
        default: return DType::F32;
    }
}

DType quant_type_for_row(DType requested, int64_t k) {
    if (!is_quantized_weight_type(requested))
        fail("quantize: ", dtype_name(requested), " is not a quantized weight type");
    if (k % dtype_block_size(requested) == 0) return requested;
    // llama.cpp falls back to Q5_0/Q5_1/Q8_0; of the 32-blocks we have, Q8_0 keeps the quality
    // at least as high as the K-quant asked for.
    if (k % kQK == 0) return DType::Q8_0;
    return DType::BF16;
}

}  // namespace tandem::cpu
