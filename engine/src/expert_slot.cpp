#include "engine/src/expert_slot.h"

#include <chrono>

namespace tandem {
namespace {

constexpr size_t kSlotAlign = 256;  // each of gate, up, down starts on this boundary

size_t align_up(size_t n) {
    return (n + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
}

}  // namespace

size_t expert_slot_bytes(const cpu::ExpertWeights& w) {
    return align_up(size_t(w.gate.bytes())) + align_up(size_t(w.up.bytes())) +
           align_up(size_t(w.down.bytes()));
}

cpu::ExpertWeights expert_at(std::byte* p, const cpu::ExpertWeights& like, Device device) {
    const size_t up_at = align_up(size_t(like.gate.bytes()));
    const size_t down_at = up_at + align_up(size_t(like.up.bytes()));
    return {.gate = Tensor(p, like.gate.dtype(), like.gate.shape(), device),
            .up = Tensor(p + up_at, like.up.dtype(), like.up.shape(), device),
            .down = Tensor(p + down_at, like.down.dtype(), like.down.shape(), device)};
}

void copy_expert(Stream& stream, const cpu::ExpertWeights& dst, const cpu::ExpertWeights& w) {
    stream.copy_async(dst.gate.data(), w.gate.data(), size_t(w.gate.bytes()),
                      CopyDirection::HostToDevice);
    stream.copy_async(dst.up.data(), w.up.data(), size_t(w.up.bytes()),
                      CopyDirection::HostToDevice);
    stream.copy_async(dst.down.data(), w.down.data(), size_t(w.down.bytes()),
                      CopyDirection::HostToDevice);
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

}  // namespace tandem
