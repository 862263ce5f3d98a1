// The hybrid cost model measured on this machine, kept between runs: start-up calibration takes
// a second or two, and its result only changes with the machine, the thread count, the device and
// the experts' shape and weight types, which together form the key.
//
// One JSON file maps keys to cost models ({"<key>": {"cpu_a_ms": ..., ...}}). There is no default
// file (the library reads no environment): "" loads nothing and saves nothing; the tools pass
// $XDG_CACHE_HOME/tandem/calibration.json (or ~/.cache/tandem/...). A file that cannot be read or
// parsed is treated as empty and replaced on the next save, with a warning: it is a cache.
#pragma once

#include <optional>
#include <string>

#include "scheduler/cost_model.h"

namespace tandem {

struct ModelConfig;

// "AMD EPYC 9R14 | 2 threads | sim:0 | hidden 2048 ffn 1024 experts 64 | q4_k q4_k q6_k".
std::string calibration_key(const ModelConfig& config, const std::string& weight_types,
                            int n_threads, const std::string& device);
std::string default_calibration_file();  // "": not cached

std::optional<CostModel> load_calibration(const std::string& file, const std::string& key);
// Adds or replaces `key`; writes through a temporary file and a rename.
void save_calibration(const std::string& file, const std::string& key, const CostModel& cost);

}  // namespace tandem
