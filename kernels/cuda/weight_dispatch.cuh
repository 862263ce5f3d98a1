// The one switch from a weight DType to the compile-time type the kernels are instantiated for:
// with_weight_type(type, f) calls f(std::integral_constant<DType, T>{}) for the ten weight types
// and throws tandem::Error for any other. Included by .cu files only.
#pragma once
#include <type_traits>

#include "kernels/dtype.h"
#include "kernels/error.h"

namespace tandem::cuda {

template <class F>
void with_weight_type(DType type, F&& f) {
    switch (type) {
        case DType::F32: return f(std::integral_constant<DType, DType::F32>{});
        case DType::F16: return f(std::integral_constant<DType, DType::F16>{});
        case DType::BF16: return f(std::integral_constant<DType, DType::BF16>{});
        case DType::Q8_0: return f(std::integral_constant<DType, DType::Q8_0>{});
        case DType::Q4_0: return f(std::integral_constant<DType, DType::Q4_0>{});
        case DType::Q5_0: return f(std::integral_constant<DType, DType::Q5_0>{});
        case DType::Q4_K: return f(std::integral_constant<DType, DType::Q4_K>{});
        case DType::Q5_K: return f(std::integral_constant<DType, DType::Q5_K>{});
        case DType::Q6_K: return f(std::integral_constant<DType, DType::Q6_K>{});
        case DType::MXFP4: return f(std::integral_constant<DType, DType::MXFP4>{});
        default: fail("CUDA kernels: ", dtype_name(type), " is not a weight type");
    }
}

}  // namespace tandem::cuda
