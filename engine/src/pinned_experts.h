// PinnedExperts: the routed experts' host weights made copyable to a CUDA device at full PCIe
// speed and asynchronously to the host, which pageable memory is not (a copy from it is staged
// through a driver buffer and holds the calling thread).
//
// bind() page-locks the memory the experts already live in (cudaHostRegister, read-only, since a
// mapped checkpoint is a read-only mapping): their page ranges, merged where they touch, each
// registered once. Where the driver refuses, it keeps a page-locked copy of the routed experts
// instead and logs what that costs; source() then points at the copy. For sim (and cpu) it does
// nothing and source() is the model's weights. The hybrid executor copies from source().
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cpu/expert_ffn.h"
#include "models/decoder.h"

namespace tandem {

// A byte range [begin, end).
struct ByteRange {
    uintptr_t begin = 0, end = 0;
    auto operator<=>(const ByteRange&) const = default;
};

// `ranges` widened to whole pages of `page` bytes, sorted, and merged where they overlap or touch:
// the fewest registrations that cover them, none overlapping (cudaHostRegister refuses a range
// that overlaps one already registered).
std::vector<ByteRange> page_ranges(std::vector<ByteRange> ranges, size_t page);

class PinnedExperts {
  public:
    PinnedExperts() = default;
    PinnedExperts(const PinnedExperts&) = delete;
    PinnedExperts& operator=(const PinnedExperts&) = delete;
    ~PinnedExperts();

    // Releases what an earlier bind() held, then pins `layers`' routed experts for `device`.
    void bind(Device device, std::span<const MoeWeights* const> layers);

    // The expert to copy from: the model's own (registered, or not a CUDA device) or the copy.
    const cpu::ExpertWeights& source(size_t layer, size_t expert) const;
    // The same expert at the addresses a kernel of the device reads it through (registered
    // memory is mapped; the page-locked copy is at its host address under unified addressing;
    // sim's kernels read host memory as it is). The tensors still say Device::cpu().
    const cpu::ExpertWeights& device_source(size_t layer, size_t expert) const;

    bool registered() const { return !registered_.empty(); }
    bool copied() const { return bool(copy_); }

  private:
    void release();

    std::span<const MoeWeights* const> layers_;
    std::vector<void*> registered_;  // the starts of the registered ranges
    Buffer copy_;                    // the fallback: every routed expert, page-locked
    std::vector<std::vector<cpu::ExpertWeights>> copies_;  // views into copy_, per layer
    std::vector<std::vector<cpu::ExpertWeights>> mapped_;  // registered: device addresses
};

}  // namespace tandem
