// The engine's command-line flags, one set for every tool that opens an Engine (tandem-run,
// tandem-server): each sets the EngineConfig field of the same name, so `--help` lists the same
// engine flags everywhere. The hybrid ones need --expert-device (CLI11 refuses them without it).
//
// The environment is read here, never in the library: TANDEM_HWLOC_SYNTHETIC is the default of
// --numa-topology, TANDEM_TILE_GEMM of --tile-gemm, and the calibration cache defaults to
// $XDG_CACHE_HOME/tandem/calibration.json (or ~/.cache/tandem/...) when an expert device is set.
// A flag given on the command line wins over its variable.
#pragma once

#include <tandem/engine.h>

#include <CLI/CLI.hpp>

namespace tandem {

void add_engine_flags(CLI::App& app, EngineConfig& config);

// The fields whose defaults come from the environment, where a field is still empty:
// tile_gemm from TANDEM_TILE_GEMM, numa_topology from TANDEM_HWLOC_SYNTHETIC, and with an expert
// device calibration_file from XDG_CACHE_HOME or HOME. For tools that fill EngineConfig without
// add_engine_flags (tandem-bench).
void apply_environment_defaults(EngineConfig& config);

// After CLI11 parsed the flags: apply_environment_defaults, then the library's own check of the
// whole config (check_engine_config), so that a bad value fails before the model or a tokenizer
// is read. Throws tandem::Error naming every bad field.
void finish_engine_flags(EngineConfig& config);

// "tandem-run 0.1.0", for --version.
std::string version_line(const std::string& tool);

}  // namespace tandem
