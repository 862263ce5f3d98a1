// Index arithmetic of the MLA step ops (mla.cu), shared with the CPU twin test.
#pragma once

#include <cstdint>

#include "kernels/cuda/host_device.h"

namespace tandem::cuda {

// DeepSeek's rotary pairs are interleaved (2i, 2i + 1) (V2 always, V3 when rope_interleave); the
// rotate-half RoPE kernel pairs (i, i + n / 2). Element `i` of the de-interleaved copy of `n`
// rotary dims comes from element mla_rope_source(i, n, interleaved) of the projection.
TANDEM_HD int64_t mla_rope_source(int64_t i, int64_t n, bool interleaved) {
    if (!interleaved) return i;
    return i < n / 2 ? 2 * i : 2 * (i - n / 2) + 1;
}

}  // namespace tandem::cuda
