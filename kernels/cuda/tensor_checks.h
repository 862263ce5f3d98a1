// Argument checks shared by the CUDA op launchers (elementwise, rope, attention, router): each
// throws tandem::Error naming the op, the argument, what was expected and what was found, so bad
// input fails the request instead of faulting on the device. Plain C++, no CUDA headers.
#pragma once

#include <string_view>

#include "kernels/cuda/host_device.h"
#include "kernels/error.h"
#include "kernels/tensor.h"

namespace tandem::cuda {

// The tensor's data must be memory of the context's device.
inline void require_on(const Tensor& t, Device device, std::string_view op, std::string_view name) {
    if (t.empty()) fail(op, ": ", name, " is empty");
    if (!(t.device() == device))
        fail(op, ": ", name, " ", t.describe(), " is on ", t.device().name(), ", expected ",
             device.name());
}

// A contiguous f32 tensor of the given rank on `device`.
inline void require_f32(const Tensor& t, int rank, Device device, std::string_view op,
                        std::string_view name) {
    require_on(t, device, op, name);
    if (t.rank() != rank || t.dtype() != DType::F32 || !t.is_contiguous())
        fail(op, ": ", name, " must be a contiguous rank-", rank, " f32 tensor, got ",
             t.describe());
}

// f32, f16 and bf16 as the kernels read them; anything else is refused, naming the op.
inline FloatKind float_kind(DType dtype, std::string_view op, std::string_view name) {
    switch (dtype) {
        case DType::F32: return FloatKind::F32;
        case DType::F16: return FloatKind::F16;
        case DType::BF16: return FloatKind::BF16;
        default: fail(op, ": ", name, " is ", dtype_name(dtype), ", expected f32, f16 or bf16");
    }
}

}  // namespace tandem::cuda
