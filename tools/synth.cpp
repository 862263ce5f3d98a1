// tandem-synth: writes a synthetic Qwen3-MoE-shaped checkpoint with random weights (seeded), for
// benchmarks (bench/default_model.sh). On a terminal it shows a bar of the layers generated.
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

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
    bool show_progress = false;
    app.add_flag("--progress", show_progress, "show progress even when stderr is not a terminal");
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
        // Progress on a terminal only (a log or a pipe gets the last line alone).
        const bool tty = isatty(STDERR_FILENO) || show_progress;
        tandem::SynthProgress progress;
        if (tty)
            progress = [](int64_t layer, int64_t n_layers) {
                if (layer > n_layers) {
                    std::fprintf(stderr, "\rtandem-synth: writing model.safetensors      \n");
                    return;
                }
                constexpr int kWidth = 30;
                const int filled = int(kWidth * layer / n_layers);
                std::fprintf(stderr, "\rtandem-synth: [%s%s] layer %lld/%lld",
                             std::string(size_t(filled), '#').c_str(),
                             std::string(size_t(kWidth - filled), ' ').c_str(), (long long)layer,
                             (long long)n_layers);
                std::fflush(stderr);
            };
        const int64_t n = tandem::write_synthetic_qwen3_moe(out, spec, progress);
        std::printf("wrote %s: %.1fM parameters (%s)\n", out.c_str(), double(n) / 1e6,
                    dtype.c_str());
    } catch (const tandem::Error& e) {
        std::fprintf(stderr, "tandem-synth: %s\n", e.what());
        return 1;
    }
    return 0;
}
