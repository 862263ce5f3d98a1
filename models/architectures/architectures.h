// One factory per architecture; models/registry.cpp maps the `architectures` string of
// config.json to them. Adding an architecture: one file here, one line in the registry, one
// golden test.
#pragma once

#include <memory>
#include <string>

#include "models/checkpoint.h"
#include "models/config.h"
#include "models/decoder.h"
#include "models/model.h"

namespace tandem {

// Each reads its config keys from `reader` on top of `config` (which already holds the
// architecture name and the generation config's token ids) and binds its weights.
using ArchitectureFactory = std::unique_ptr<Model> (*)(const ConfigReader& reader,
                                                       ModelConfig config, Checkpoint checkpoint);

// The factory registered for an `architectures` name (models/registry.cpp); nullptr if none.
ArchitectureFactory find_architecture_factory(const std::string& name);

// DeepSeek-V3's router, shared with GLM-4.5: sigmoid scores, e_score_correction_bias for the
// choice, noaux_tc over n_group / topk_group, norm_topk_prob (default true), then
// routed_scaling_factor. The defaults of absent keys differ per architecture.
struct RoutingDefaults {
    static constexpr int64_t kRequired = 0;  // n_group and topk_group must be present
    double routed_scaling_factor = 1.0;
    int64_t n_group = kRequired;  // also topk_group's default
};
void read_noaux_tc_routing(const ConfigReader& reader, ModelConfig& config,
                           const RoutingDefaults& defaults);
// n_group and topk_group, checked against n_experts and n_experts_active.
void read_router_groups(const ConfigReader& reader, ModelConfig& config, int64_t default_groups);

// DeepSeek's and GLM's tensor names: shared experts under mlp.shared_experts (plural).
DecoderNames shared_experts_names();

std::unique_ptr<Model> make_llama(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_qwen2(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_mixtral(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_qwen2_moe(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_qwen3_moe(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_olmoe(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_deepseek_v2(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_deepseek_v3(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_glm4_moe(const ConfigReader&, ModelConfig, Checkpoint);
std::unique_ptr<Model> make_gpt_oss(const ConfigReader&, ModelConfig, Checkpoint);

}  // namespace tandem
