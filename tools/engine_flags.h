// The hybrid runtime's and the NUMA command-line flags, spelled the same in tandem-run and
// tandem-server (the hybrid ones as lists in tandem-bench): each sets the EngineConfig field of
// the same name.
#pragma once

#include <tandem/engine.h>

#include <CLI/CLI.hpp>

namespace tandem {

void add_hybrid_flags(CLI::App& app, EngineConfig& config);

// --numa auto|off|distribute and --numa-topology (README "NUMA"). The topology's default is the
// environment variable TANDEM_HWLOC_SYNTHETIC, read here (the library reads none), so that a
// test or a script can run every tool on a made-up multi-node machine.
void add_numa_flags(CLI::App& app, EngineConfig& config);

}  // namespace tandem
