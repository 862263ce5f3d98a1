// How one routed expert sits in a device slot (gate | up | down, each 256-byte aligned, in the
// types and shapes of the host weights), and the copies that put it there. Shared by the hybrid
// executor and its calibration.
#pragma once

#include <cstddef>

#include "kernels/cpu/expert_ffn.h"
#include "kernels/stream.h"

namespace tandem {

// Bytes of a slot that holds `w`.
size_t expert_slot_bytes(const cpu::ExpertWeights& w);

// An expert laid out at `p` with the types and shapes of `like`.
cpu::ExpertWeights expert_at(std::byte* p, const cpu::ExpertWeights& like, Device device);

// Queues on `stream` the copies of host expert `w` into `dst` (laid out as expert_at(dst, w)).
void copy_expert(Stream& stream, const cpu::ExpertWeights& dst, const cpu::ExpertWeights& w);

// A steady clock in milliseconds, for the executor's timelines and measurements.
double now_ms();

}  // namespace tandem
