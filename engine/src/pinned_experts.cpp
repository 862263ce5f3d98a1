#include "engine/src/pinned_experts.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/cuda_backend.h"
#include "kernels/log.h"

namespace tandem {

std::vector<ByteRange> page_ranges(std::vector<ByteRange> ranges, size_t page) {
    // An empty range holds no byte: widened, it would pin a page for nothing.
    std::erase_if(ranges, [](const ByteRange& r) { return r.end <= r.begin; });
    for (ByteRange& r : ranges) {
        r.begin = r.begin / page * page;
        r.end = (r.end + page - 1) / page * page;
    }
    std::sort(ranges.begin(), ranges.end());
    std::vector<ByteRange> merged;
    for (const ByteRange& r : ranges) {
        if (!merged.empty() && r.begin <= merged.back().end)
            merged.back().end = std::max(merged.back().end, r.end);
        else
            merged.push_back(r);
    }
    return merged;
}

namespace {

template <class Fn>
void for_each_matrix(const cpu::ExpertWeights& e, Fn fn) {
    fn(e.gate);
    fn(e.up);
    fn(e.down);
}

}  // namespace

PinnedExperts::~PinnedExperts() {
    release();
}

void PinnedExperts::release() {
    for (void* p : registered_)
        cuda_host_unregister(p);
    registered_.clear();
    copy_ = Buffer();
    copies_.clear();
}

void PinnedExperts::bind(Device device, std::span<const MoeWeights* const> layers) {
    release();
    layers_ = layers;
    if (device.kind != DeviceKind::Cuda) return;
    std::vector<ByteRange> ranges;
    size_t bytes = 0;
    for (const MoeWeights* layer : layers)
        for (const cpu::ExpertWeights& e : layer->experts)
            for_each_matrix(e, [&](const Tensor& t) {
                const auto begin = reinterpret_cast<uintptr_t>(t.data());
                ranges.push_back({begin, begin + uintptr_t(t.bytes())});
                bytes += size_t(t.bytes());
            });
    const auto page = size_t(sysconf(_SC_PAGESIZE));
    std::string why;
    for (const ByteRange& r : page_ranges(std::move(ranges), page)) {
        void* start = reinterpret_cast<void*>(r.begin);
        if (!cuda_host_register(start, r.end - r.begin, &why)) break;
        registered_.push_back(start);
    }
    if (why.empty()) {
        log_info("hybrid executor: ", double(bytes) / (1 << 20),
                 " MiB of routed experts page-locked in place for ", device.name());
        return;
    }
    // The fallback: one page-locked copy, laid out expert after expert.
    for (void* p : registered_)
        cuda_host_unregister(p);
    registered_.clear();
    log_warn("hybrid executor: the routed experts' memory cannot be page-locked (", why,
             "); keeping a page-locked copy of them instead: ", double(bytes) / (1 << 20),
             " MiB more host memory");
    copy_ = allocate_pinned(device, bytes);
    auto* at = static_cast<std::byte*>(copy_.data());
    for (const MoeWeights* layer : layers) {
        std::vector<cpu::ExpertWeights>& copies = copies_.emplace_back();
        for (const cpu::ExpertWeights& e : layer->experts) {
            cpu::ExpertWeights c = e;
            for (Tensor* t : {&c.gate, &c.up, &c.down}) {
                std::memcpy(at, t->data(), size_t(t->bytes()));
                *t = Tensor(at, t->dtype(), t->shape(), Device::cpu());
                at += t->bytes();
            }
            copies.push_back(c);
        }
    }
}

const cpu::ExpertWeights& PinnedExperts::source(size_t layer, size_t expert) const {
    if (!copies_.empty()) return copies_[layer][expert];
    return layers_[layer]->experts[expert];
}

}  // namespace tandem
