#include "engine/src/pinned_experts.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <string>

#include "kernels/cuda_backend.h"
#include "kernels/error.h"
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
    mapped_.clear();
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
    std::vector<std::pair<ByteRange, uintptr_t>> device_at;  // each range and its device address
    for (const ByteRange& r : page_ranges(std::move(ranges), page)) {
        void* start = reinterpret_cast<void*>(r.begin);
        void* device_address = cuda_host_register(start, r.end - r.begin, &why);
        if (device_address == nullptr) break;
        registered_.push_back(start);
        device_at.emplace_back(r, reinterpret_cast<uintptr_t>(device_address));
    }
    if (why.empty()) {
        // The same experts at their device addresses, for kernels that read them.
        for (const MoeWeights* layer : layers) {
            std::vector<cpu::ExpertWeights>& mapped = mapped_.emplace_back();
            for (cpu::ExpertWeights e : layer->experts) {
                for (Tensor* t : {&e.gate, &e.up, &e.down}) {
                    const auto at = reinterpret_cast<uintptr_t>(t->data());
                    const auto range = std::upper_bound(
                        device_at.begin(), device_at.end(), at,
                        [](uintptr_t a, const auto& r) { return a < r.first.begin; });
                    if (range == device_at.begin() || at >= std::prev(range)->first.end)
                        fail(
                            "hybrid executor: an expert's weights are outside every page-locked "
                            "range");  // page_ranges covers them all: a bug
                    const auto& [r, device_base] = *std::prev(range);
                    *t = Tensor(reinterpret_cast<void*>(device_base + (at - r.begin)), t->dtype(),
                                t->shape(), Device::cpu());
                }
                mapped.push_back(e);
            }
        }
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

const cpu::ExpertWeights& PinnedExperts::device_source(size_t layer, size_t expert) const {
    if (!mapped_.empty()) return mapped_[layer][expert];
    return source(layer, expert);  // the page-locked copy: unified addressing; sim: host memory
}

}  // namespace tandem
