// load_model(): config.json -> architecture factory -> Model; a .gguf file goes to the GGUF
// loader, which ends in the same factories.
#include <filesystem>
#include <fstream>
#include <map>

#include "kernels/error.h"
#include "models/architectures/architectures.h"
#include "models/gguf_loader.h"

namespace tandem {

namespace fs = std::filesystem;

namespace {

const std::map<std::string, ArchitectureFactory>& registry() {
    static const std::map<std::string, ArchitectureFactory> factories = {
        {"LlamaForCausalLM", &make_llama},
        {"Qwen2ForCausalLM", &make_qwen2},
        {"MixtralForCausalLM", &make_mixtral},
        {"Qwen2MoeForCausalLM", &make_qwen2_moe},
        {"Qwen3MoeForCausalLM", &make_qwen3_moe},
        {"OlmoeForCausalLM", &make_olmoe},
        {"DeepseekV2ForCausalLM", &make_deepseek_v2},
        {"DeepseekV3ForCausalLM", &make_deepseek_v3},
        {"Glm4MoeForCausalLM", &make_glm4_moe},
        {"GptOssForCausalLM", &make_gpt_oss},
    };
    return factories;
}

nlohmann::json read_json(const fs::path& path) {
    std::ifstream in(path);
    if (!in) fail(path.string(), ": cannot open");
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail(path.string(), ": not valid JSON: ", e.what());
    }
}

// Token ids from config.json, then generation_config.json, whose values win (as in transformers).
void read_special_tokens(const ConfigReader& reader, ModelConfig& config) {
    if (reader.has("bos_token_id")) config.bos_token_id = reader.token_ids("bos_token_id").at(0);
    if (reader.has("eos_token_id")) config.eos_token_ids = reader.token_ids("eos_token_id");
}

}  // namespace

ArchitectureFactory find_architecture_factory(const std::string& name) {
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : it->second;
}

std::vector<std::string> supported_architectures() {
    std::vector<std::string> names;
    for (const auto& [name, factory] : registry())
        names.push_back(name);
    return names;
}

std::unique_ptr<Model> load_model(const std::string& dir) {
    const fs::path root(dir);
    if (is_gguf_path(dir) && !fs::is_directory(root)) return load_gguf_model(dir);
    if (!fs::is_directory(root)) fail(dir, ": not a directory or a .gguf file");
    const fs::path config_path = root / "config.json";
    const nlohmann::json json = read_json(config_path);
    const ConfigReader reader(json, config_path.string());
    if (!reader.has("architectures") || !json.at("architectures").is_array() ||
        json.at("architectures").empty() || !json.at("architectures")[0].is_string())
        reader.fail_key("architectures", "missing or not a list of names");
    const std::string architecture = json.at("architectures")[0].get<std::string>();
    auto it = registry().find(architecture);
    if (it == registry().end()) {
        std::string known;
        for (const auto& name : supported_architectures())
            known += (known.empty() ? "" : ", ") + name;
        reader.fail_key("architectures",
                        cat("unknown architecture '", architecture, "' (supported: ", known, ")"));
    }
    ModelConfig config;
    config.architecture = architecture;
    read_special_tokens(reader, config);
    const fs::path generation_path = root / "generation_config.json";
    if (fs::exists(generation_path)) {
        const nlohmann::json generation = read_json(generation_path);
        read_special_tokens(ConfigReader(generation, generation_path.string()), config);
    }
    return it->second(reader, std::move(config), Checkpoint::open(dir));
}

}  // namespace tandem
