// RMSNorm on the CPU, as Llama-family models compute it in float32:
//   out = x / sqrt(mean(x²) + eps) * weight
#pragma once

#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace tandem::cpu {

// x, out: [n_rows, dim] f32 (out may alias x); weight: [dim] of any float type.
void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out,
              ThreadPool& pool);

}  // namespace tandem::cpu
