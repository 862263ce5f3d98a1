// One factory per architecture; models/registry.cpp maps the `architectures` string of
// config.json to them. Adding an architecture: one file here, one line in the registry, one
// golden test.
#pragma once

#include <memory>
#include <string>

#include "models/checkpoint.h"
#include "models/config.h"
#include "models/model.h"

namespace tandem {

// Each reads its config keys from `reader` on top of `config` (which already holds the
// architecture name and the generation config's token ids) and binds its weights.
using ArchitectureFactory = std::unique_ptr<Model> (*)(const ConfigReader& reader,
                                                       ModelConfig config, Checkpoint checkpoint);

// The factory registered for an `architectures` name (models/registry.cpp); nullptr if none.
ArchitectureFactory find_architecture_factory(const std::string& name);

std::unique_ptr<Model> make_llama(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_qwen2(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_mixtral(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_qwen2_moe(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_qwen3_moe(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_olmoe(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_deepseek_v2(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_deepseek_v3(const ConfigReader&, ModelConfig, Checkpoint);

}  // namespace tandem
