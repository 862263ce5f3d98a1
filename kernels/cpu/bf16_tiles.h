// Vector dequantizers of weight rows to bf16, per ISA level (internal to tile_gemm.cpp).
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace tandem::cpu::avx512 {

// n_rows rows of k elements of `type` to bf16 at out (k per row); false for a type without a
// vector dequantizer here (the caller falls back to dequantize_row).
bool rows_to_bf16(const void* rows, DType type, int64_t n_rows, int64_t k, uint16_t* out);

}  // namespace tandem::cpu::avx512
