// StepLayout: how the rows of one forward step's activations map to sequences.
// Rows of all sequences are concatenated: sequence s owns rows [first_row, first_row + n_tokens),
// and its new tokens take positions [cache->length(), cache->length() + n_tokens).
#pragma once

#include <cstdint>
#include <vector>

#include "cache/kv_cache.h"

namespace tandem {

struct StepSequence {
    int64_t first_row = 0;
    int64_t n_tokens = 0;
    KvCache* cache = nullptr;
};

struct StepLayout {
    int64_t n_tokens = 0;
    std::vector<StepSequence> sequences;
    std::vector<int64_t> positions;  // [n_tokens]
};

}  // namespace tandem
