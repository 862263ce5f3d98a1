// tandem-run: generate from a model on the command line and report prefill/decode speed.
//
//   tandem-run --model DIR --prompt-ids 1,2,3 --max-tokens 64 --temperature 0
//   tandem-run --model DIR --random-prompt 128 --max-tokens 64 --ignore-eos
#include <tandem/engine.h>
#include <CLI/CLI.hpp>
#include <cstdio>
#include <random>
#include <sstream>

#include "kernels/error.h"
#include "kernels/log.h"
#include "kernels/thread_pool.h"
#include "models/config.h"

namespace {

std::vector<int32_t> parse_ids(const std::string& text) {
    std::vector<int32_t> ids;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        size_t used = 0;
        long long value = 0;
        try {
            value = std::stoll(item, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != item.size() || value < 0 || value > INT32_MAX)
            tandem::fail("--prompt-ids: '", item, "' is not a token id");
        ids.push_back(int32_t(value));
    }
    return ids;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Generate tokens with a Tandem model and report prefill/decode tokens/s"};
    tandem::EngineConfig config;
    tandem::SamplingParams params;
    std::string prompt_ids, log_level = "warn";
    int random_prompt = 0;
    app.add_option("--model", config.model_dir, "Hugging Face model directory")->required();
    app.add_option("--prompt-ids", prompt_ids, "prompt as comma-separated token ids");
    app.add_option("--random-prompt", random_prompt,
                   "use N random token ids as the prompt (seeded)");
    app.add_option("--max-tokens", params.max_tokens, "tokens to generate")->capture_default_str();
    app.add_option("--temperature", params.temperature, "0 = greedy")->capture_default_str();
    app.add_option("--top-k", params.top_k, "0 = off")->capture_default_str();
    app.add_option("--top-p", params.top_p, "1 = off")->capture_default_str();
    app.add_option("--min-p", params.min_p, "0 = off")->capture_default_str();
    app.add_option("--seed", params.seed, "sampling seed")->capture_default_str();
    app.add_flag("--ignore-eos", params.ignore_eos, "keep generating after an EOS token");
    app.add_option("--threads", config.n_threads, "worker threads, 0 = physical cores")
        ->capture_default_str();
    app.add_option("--ctx", config.context_length, "context length, 0 = the model's")
        ->capture_default_str();
    app.add_option("--quantize", config.quantize,
                   "quantize weights at load: q8_0, q4_0, q4_k, q5_k, q6_k");
    app.add_option("--cpu-isa", config.cpu_isa, "force the CPU kernels' ISA: scalar, avx2, avx512");
    app.add_option("--log-level", log_level, "error, warn, info or debug")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    try {
        tandem::set_log_level(tandem::parse_log_level(log_level));
        std::vector<int32_t> prompt = parse_ids(prompt_ids);
        tandem::Engine engine = tandem::Engine::open(config);
        if (random_prompt > 0) {
            std::mt19937_64 rng(params.seed);
            const auto vocab = uint64_t(engine.model_config().vocab_size);
            for (int i = 0; i < random_prompt; ++i)
                prompt.push_back(int32_t(rng() % vocab));
        }
        if (prompt.empty()) tandem::fail("give a prompt with --prompt-ids or --random-prompt");
        const tandem::Generation out = engine.generate(prompt, params);
        for (size_t i = 0; i < out.tokens.size(); ++i)
            std::printf("%s%d", i ? " " : "", out.tokens[i]);
        std::printf("\n");
        const auto& t = out.timings;
        std::printf("finish: %s\n",
                    std::string(tandem::finish_reason_name(out.finish_reason)).c_str());
        std::printf("prefill: %lld tokens in %.3f s = %.2f tokens/s\n", (long long)t.prefill_tokens,
                    t.prefill_seconds, t.prefill_tokens_per_second());
        std::printf("decode:  %lld tokens in %.3f s = %.2f tokens/s\n", (long long)t.decode_tokens,
                    t.decode_seconds, t.decode_tokens_per_second());
        std::printf("threads: %d\n", engine.thread_pool().size());
    } catch (const tandem::Error& e) {
        std::fprintf(stderr, "tandem-run: %s\n", e.what());
        return 1;
    }
    return 0;
}
