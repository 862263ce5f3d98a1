// EngineConfig checked and parsed once, before Engine::open starts a thread or opens a file:
// every string field becomes its typed value, every number is range-checked, and one
// tandem::Error names every bad field at once, by its EngineConfig name (the tools know their
// flags; the library does not).
//
// Non-goals: nothing here reads a file (the model directory is only checked to exist) or the
// environment; the hybrid runtime's trace, hardware profile and calibration are read later, by
// engine/src/hybrid_setup.cpp, which names the field when one of those files is bad.
#pragma once

#include <optional>

#include <tandem/engine.h>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/tile_gemm.h"
#include "kernels/device.h"
#include "kernels/dtype.h"

namespace tandem {

// The typed values of the string fields that Engine::open acts on itself; the hybrid fields
// (expert_device, planner, cache_policy, replay_predictor, numa) are checked here too and parsed
// again where they are used.
struct ParsedEngineConfig {
    Device device;                                 // of the model: cpu or cuda:N
    std::optional<DType> quantize;                 // a quantized weight type; none: as stored
    DType kv_cache_type = DType::F16;              // f32, f16 (default) or bf16
    std::optional<cpu::CpuIsa> cpu_isa;            // none: the best the CPU runs
    std::optional<cpu::TileGemmPolicy> tile_gemm;  // none: the process's policy is kept
};

// Above this many worker threads Engine::open refuses: max(64, 4 x the hardware threads).
int max_engine_threads();

// Throws tandem::Error listing every bad field, one per line after the first:
//   "EngineConfig: 2 bad fields:\n  n_threads: 1000 is above ...\n  quantize: 'q3_k' is ..."
ParsedEngineConfig parse_engine_config(const EngineConfig& config);

}  // namespace tandem
