// The hybrid runtime's command-line flags, spelled the same in tandem-run and tandem-server (and
// as lists in tandem-bench): each sets the EngineConfig field of the same name.
#pragma once

#include <tandem/engine.h>

#include <CLI/CLI.hpp>

namespace tandem {

void add_hybrid_flags(CLI::App& app, EngineConfig& config);

}  // namespace tandem
