// A progress line for the slow parts of Engine::open (load-time quantization, the upload to a
// GPU), drawn on stderr by the tools when it is a terminal: the library reports
// (EngineConfig.on_load_progress), the tools draw.
#pragma once

#include <string>

#include <tandem/engine.h>

namespace tandem {

// A callback that redraws "TOOL: STAGE [#####.....] 52% 1.4 / 2.7 GiB" in place and ends the
// line when a stage completes; empty (nothing drawn) unless stderr is a terminal or `force`.
LoadProgressCallback terminal_load_progress(std::string tool, bool force = false);

}  // namespace tandem
