// tandem-synth: writes a synthetic Qwen3-MoE-shaped checkpoint with random weights (seeded).
// The main job runs on the default one until a trained demo model exists.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "kernels/error.h"
#include "tools/synthetic_model.h"

int main(int argc, char** argv) {
    CLI::App app{"Write a synthetic Qwen3-MoE checkpoint with random weights"};
    tandem::SyntheticQwen3MoeSpec spec = tandem::default_synthetic_spec();
    std::string out, dtype = "bf16";
    app.set_version_flag("--version", std::string("tandem-synth ") + TANDEM_VERSION);
    app.add_option("--out", out, "output directory")->required();
    app.add_option("--layers", spec.n_layers, "decoder layers")->capture_default_str();
    app.add_option("--hidden", spec.hidden_dim, "hidden size")->capture_default_str();
    app.add_option("--heads", spec.n_heads, "attention heads")->capture_default_str();
    app.add_option("--kv-heads", spec.n_kv_heads, "key/value heads")->capture_default_str();
    app.add_option("--head-dim", spec.head_dim, "width of one head")->capture_default_str();
    app.add_option("--experts", spec.n_experts, "routed experts per layer")->capture_default_str();
    app.add_option("--top-k", spec.n_experts_active, "experts per token")->capture_default_str();
    app.add_option("--expert-ffn", spec.expert_ffn_dim, "expert intermediate size")
        ->capture_default_str();
    app.add_option("--vocab", spec.vocab_size, "vocabulary size")->capture_default_str();
    app.add_option("--dtype", dtype, "f32, f16 or bf16")->capture_default_str();
    app.add_option("--seed", spec.seed, "random seed")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    try {
        if (dtype == "f32")
            spec.dtype = tandem::DType::F32;
        else if (dtype == "f16")
            spec.dtype = tandem::DType::F16;
        else if (dtype == "bf16")
            spec.dtype = tandem::DType::BF16;
        else
            tandem::fail("--dtype: '", dtype, "' is not f32, f16 or bf16");
        const int64_t n = tandem::write_synthetic_qwen3_moe(out, spec);
        std::printf("wrote %s: %.1fM parameters (%s)\n", out.c_str(), double(n) / 1e6,
                    dtype.c_str());
    } catch (const tandem::Error& e) {
        std::fprintf(stderr, "tandem-synth: %s\n", e.what());
        return 1;
    }
    return 0;
}
