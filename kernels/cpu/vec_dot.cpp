#include "kernels/cpu/vec_dot.h"

#include <cstring>

#include "kernels/cpu/quant.h"
#include "kernels/error.h"

namespace tandem::cpu {

extern const VecDotKernels kVecDotScalar;
extern const VecDotKernels kVecDotAvx2;
extern const VecDotKernels kVecDotAvx512;

const VecDotKernels& vec_dot_kernels_for(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::Avx512: return kVecDotAvx512;
        case CpuIsa::Avx2: return kVecDotAvx2;
        case CpuIsa::Scalar: return kVecDotScalar;
    }
    return kVecDotScalar;
}

const VecDotKernels& vec_dot_kernels() {
    return vec_dot_kernels_for(active_isa());
}

RowDotFn row_dot(const VecDotKernels& kernels, DType weight_type) {
    switch (weight_type) {
        case DType::F32: return kernels.dot_f32;
        case DType::F16: return kernels.dot_f16;
        case DType::BF16: return kernels.dot_bf16;
        case DType::Q8_0: return kernels.dot_q8_0;
        case DType::Q4_0: return kernels.dot_q4_0;
        case DType::Q5_0: return kernels.dot_q5_0;
        case DType::Q4_K: return kernels.dot_q4_k;
        case DType::Q5_K: return kernels.dot_q5_k;
        case DType::Q6_K: return kernels.dot_q6_k;
        case DType::MXFP4: return kernels.dot_mxfp4;
        default: fail("no dot product for weights of type ", dtype_name(weight_type));
    }
}

RowDotNFn row_dot_n(const VecDotKernels& kernels, DType weight_type) {
    switch (weight_type) {
        case DType::F32: return kernels.dotn_f32;
        case DType::F16: return kernels.dotn_f16;
        case DType::BF16: return kernels.dotn_bf16;
        case DType::Q8_0: return kernels.dotn_q8_0;
        case DType::Q4_0: return kernels.dotn_q4_0;
        case DType::Q5_0: return kernels.dotn_q5_0;
        case DType::Q4_K: return kernels.dotn_q4_k;
        case DType::Q5_K: return kernels.dotn_q5_k;
        case DType::Q6_K: return kernels.dotn_q6_k;
        case DType::MXFP4: return kernels.dotn_mxfp4;
        default: fail("no dot product for weights of type ", dtype_name(weight_type));
    }
}

RowsDotFn row_dot_rows(const VecDotKernels& kernels, DType weight_type) {
    switch (weight_type) {
        case DType::Q8_0: return kernels.dotr_q8_0;
        case DType::Q4_K: return kernels.dotr_q4_k;
        case DType::MXFP4: return kernels.dotr_mxfp4;
        default: return nullptr;
    }
}

void quantize_activation(DType type, const float* x, void* out, int64_t k) {
    if (type == DType::F32) {
        std::memcpy(out, x, size_t(k) * sizeof(float));
        return;
    }
    // The block counts are quantize_row's to check; the kernels assume whole blocks.
    if (type == DType::Q8_0 && k % kQK == 0) return vec_dot_kernels().quantize_q8_0(x, out, k);
    if (type == DType::Q8_K && k % kQKK == 0) return vec_dot_kernels().quantize_q8_k(x, out, k);
    quantize_row(type, x, out, k);
}

}  // namespace tandem::cpu
