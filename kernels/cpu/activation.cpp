#include "kernels/cpu/activation.h"

#include "kernels/error.h"

namespace tandem::cpu {

void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
    if (gate.dtype() != DType::F32 || !(gate.shape() == up.shape()) ||
        !(gate.shape() == out.shape()) || up.dtype() != DType::F32 || out.dtype() != DType::F32)
        fail("silu_mul: gate ", gate.describe(), ", up ", up.describe(), " and out ",
             out.describe(), " must be f32 of one shape");
    const float* g = gate.data_as<const float>();
    const float* u = up.data_as<const float>();
    float* o = out.data_as<float>();
    const int64_t n = gate.numel();
    for (int64_t i = 0; i < n; ++i)
        o[i] = silu(g[i]) * u[i];
}

}  // namespace tandem::cpu
