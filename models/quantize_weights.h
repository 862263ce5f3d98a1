// Load-time quantization of a checkpoint's weight matrices (`--quantize q4_k`, ...).
//
// A matrix whose rows are not whole blocks of the requested type falls back per tensor, as
// llama.cpp does (cpu::quant_type_for_row). Quantized data lives in buffers the model owns; the
// mapped checkpoint is left untouched.
#pragma once

#include <vector>

#include "kernels/buffer.h"
#include "kernels/tensor.h"
#include "kernels/thread_pool.h"

namespace tandem {

// Returns `w` ([rows, k], a float type) quantized to `requested` (or its fallback), with the new
// data appended to `storage`. Rows are quantized in parallel on `pool`.
Tensor quantize_weight(const Tensor& w, DType requested, ThreadPool& pool,
                       std::vector<Buffer>& storage);

}  // namespace tandem
