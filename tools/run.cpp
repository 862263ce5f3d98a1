// tandem-run: generate from a model on the command line and report prefill/decode speed.
//
//   tandem-run --model DIR --prompt-ids 1,2,3 --max-tokens 64 --temperature 0
//   tandem-run --model DIR --random-prompt 128 --max-tokens 64 --ignore-eos
//   tandem-run --model DIR --prompt "Hello" | --chat messages.json   (needs DIR/tokenizer.json)
//   tandem-run --model model.gguf ...   (weights, config and tokenizer from one GGUF file)
#include <tandem/engine.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>

#include "kernels/error.h"
#include "kernels/log.h"
#include "kernels/thread_pool.h"
#include "models/config.h"
#include "models/model_tokenizer.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "tools/engine_flags.h"
#include "tools/load_progress.h"
#include "tools/routing_recorder.h"
#include "tools/run_prompts.h"

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

// Text prompts need the model's tokenizer: --prompt is encoded with BOS/EOS as the tokenizer
// adds them; --chat is rendered with the chat template, whose text carries its own.
std::vector<int32_t> text_prompt(const tandem::Tokenizer& tok, const std::string& prompt,
                                 const std::string& chat_file) {
    if (!chat_file.empty()) {
        std::ifstream in(chat_file, std::ios::binary);
        if (!in) tandem::fail(chat_file, ": cannot open");
        nlohmann::ordered_json messages;
        try {
            messages = nlohmann::ordered_json::parse(in);
        } catch (const nlohmann::json::exception& e) {
            tandem::fail(chat_file, ": invalid JSON: ", e.what());
        }
        const std::string text = tandem::with_context(chat_file, [&] {
            return tandem::apply_chat_template(tok, messages, /*add_generation_prompt=*/true);
        });
        return tok.encode(text, {.add_special_tokens = false});
    }
    return tok.encode(prompt);
}

// What the hybrid runtime did over the whole run.
void print_hybrid_stats(const tandem::EngineStats& s) {
    const int64_t accesses = s.expert_cache_hits + s.expert_cache_misses;
    std::printf(
        "experts: %lld on the CPU, %lld on the device; cache hit rate %.1f%% (%lld of %lld), "
        "%lld evictions, %.1f MiB moved; prefetches %lld, used %lld\n",
        (long long)s.experts_on_cpu, (long long)s.experts_on_device,
        accesses ? 100.0 * double(s.expert_cache_hits) / double(accesses) : 0.0,
        (long long)s.expert_cache_hits, (long long)accesses, (long long)s.expert_cache_evictions,
        double(s.expert_bytes_moved) / (1 << 20), (long long)s.expert_prefetches,
        (long long)s.expert_prefetches_used);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Generate tokens with a Tandem model and report prefill/decode tokens/s"};
    tandem::EngineConfig config;
    tandem::SamplingParams params;
    std::string prompt_ids, prompt_text, chat_file, log_level = "warn";
    int random_prompt = 0;
    app.add_option("--model", config.model_dir, "Hugging Face model directory or .gguf file")
        ->required();
    app.set_version_flag("--version", tandem::version_line("tandem-run"));
    // One prompt source: they used to be joined silently.
    CLI::Option* ids_opt =
        app.add_option("--prompt-ids", prompt_ids, "prompt as comma-separated token ids");
    CLI::Option* text_opt =
        app.add_option("--prompt", prompt_text, "prompt text, encoded with the model's tokenizer");
    CLI::Option* chat_opt = app.add_option(
        "--chat", chat_file, "JSON list of messages, rendered with the chat template");
    CLI::Option* random_opt = app.add_option("--random-prompt", random_prompt,
                                             "use N random token ids as the prompt (seeded)");
    app.add_option("--max-tokens", params.max_tokens, "tokens to generate")->capture_default_str();
    app.add_option("--temperature", params.temperature, "0 = greedy")->capture_default_str();
    app.add_option("--top-k", params.top_k, "0 = off")->capture_default_str();
    app.add_option("--top-p", params.top_p, "1 = off")->capture_default_str();
    app.add_option("--min-p", params.min_p, "0 = off")->capture_default_str();
    app.add_option("--seed", params.seed, "sampling seed")->capture_default_str();
    app.add_flag("--ignore-eos", params.ignore_eos, "keep generating after an EOS token");
    // Structured output (one of them): the output follows the grammar.
    std::string json_schema_file, grammar_file, regex;
    bool json_object = false;
    CLI::Option* schema_opt = app.add_option("--json-schema", json_schema_file,
                                             "JSON schema file the output must follow");
    CLI::Option* object_opt =
        app.add_flag("--json-object", json_object, "the output is a JSON object");
    CLI::Option* regex_opt =
        app.add_option("--regex", regex, "regular expression the output must match");
    CLI::Option* grammar_opt =
        app.add_option("--grammar", grammar_file, "EBNF grammar file (rule root) of the output");
    for (CLI::Option* a : {schema_opt, object_opt, regex_opt, grammar_opt})
        for (CLI::Option* b : {schema_opt, object_opt, regex_opt, grammar_opt})
            if (a != b) a->excludes(b);
    std::string prompts_file, record_file;
    bool record_prefill = false;
    CLI::Option* file_opt = app.add_option(
        "--prompts-file", prompts_file,
        "JSON lines of {\"id\", \"domain\", \"prompt\" | \"messages\"}, all run at once");
    const std::vector<CLI::Option*> sources = {ids_opt, text_opt, chat_opt, random_opt, file_opt};
    for (CLI::Option* a : sources)
        for (CLI::Option* b : sources)
            if (a != b) a->excludes(b);
    app.add_option("--record-routing", record_file,
                   "write each token's experts and router weights per MoE layer (JSON lines; "
                   ".gz compresses)");
    app.add_option("--record-lookahead", params.routing_lookahead,
                   "also record what layers L+1..L+J's routers predict from layer L (J <= 3)")
        ->capture_default_str();
    app.add_flag("--record-prefill", record_prefill, "record prompt tokens too");
    app.add_flag("--record-probabilities", params.routing_probabilities,
                 "also record every expert's router probability (the full distribution that MRS "
                 "scores in tandem-sim)");
    add_engine_flags(app, config);
    app.add_option("--log-level", log_level, "error, warn, info or debug")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    params.return_routed_experts = !record_file.empty();

    try {
        tandem::set_log_level(tandem::parse_log_level(log_level));
        // The whole config, before a tokenizer or the model is read: a bad value is named as
        // such, not blamed on whatever would have failed first.
        tandem::finish_engine_flags(config);
        auto read_file = [](const std::string& path) {
            std::ifstream in(path, std::ios::binary);
            if (!in) tandem::fail("cannot open ", path);
            return std::string(std::istreambuf_iterator<char>(in), {});
        };
        using Kind = tandem::GrammarSpec::Kind;
        if (json_object) params.grammar = tandem::GrammarSpec{.kind = Kind::JsonObject};
        if (!json_schema_file.empty())
            params.grammar =
                tandem::GrammarSpec{.kind = Kind::JsonSchema, .text = read_file(json_schema_file)};
        if (!regex.empty())
            params.grammar = tandem::GrammarSpec{.kind = Kind::Regex, .text = regex};
        if (!grammar_file.empty())
            params.grammar =
                tandem::GrammarSpec{.kind = Kind::Ebnf, .text = read_file(grammar_file)};
        std::vector<int32_t> prompt = parse_ids(prompt_ids);
        std::optional<tandem::Tokenizer> tok;
        if (!prompt_text.empty() || !chat_file.empty()) {
            // A directory's tokenizer.json, or the tokenizer metadata of a .gguf file.
            tok = tandem::with_context("--prompt and --chat need the model's tokenizer",
                                       [&] { return tandem::load_tokenizer(config.model_dir); });
            const auto ids = text_prompt(*tok, prompt_text, chat_file);
            prompt.insert(prompt.end(), ids.begin(), ids.end());
        }
        config.on_load_progress = tandem::terminal_load_progress("tandem-run");
        tandem::Engine engine = tandem::Engine::open(config);
        std::optional<tandem::RoutingRecorder> recorder;
        if (!record_file.empty()) recorder.emplace(record_file, record_prefill);
        if (!prompts_file.empty()) {
            const tandem::PromptsSummary s = tandem::run_prompts_file(
                engine, params, prompts_file, recorder ? &*recorder : nullptr);
            std::printf(
                "%lld requests: %lld prompt + %lld generated tokens in %.2f s = %.1f "
                "generated tokens/s\n",
                (long long)s.requests, (long long)s.prompt_tokens, (long long)s.generated_tokens,
                s.seconds, s.seconds > 0 ? double(s.generated_tokens) / s.seconds : 0.0);
            if (recorder)
                std::printf("routing: %lld lines in %s\n", (long long)recorder->lines(),
                            record_file.c_str());
            if (!config.expert_device.empty()) print_hybrid_stats(engine.stats());
            return 0;
        }
        if (random_prompt > 0) {
            std::mt19937_64 rng(params.seed.value_or(0));
            const auto vocab = uint64_t(engine.model_config().vocab_size);
            for (int i = 0; i < random_prompt; ++i)
                prompt.push_back(int32_t(rng() % vocab));
        }
        if (prompt.empty())
            tandem::fail("give a prompt with --prompt, --chat, --prompt-ids or --random-prompt");
        const tandem::RequestOutput out = engine.generate(tandem::Prompt::tokens(prompt), params);
        if (!out.error.empty()) tandem::fail(out.error);
        const tandem::Completion& c = out.completions.at(0);
        if (recorder) recorder->write("prompt", "", out, 0);
        for (size_t i = 0; i < c.token_ids.size(); ++i)
            std::printf("%s%d", i ? " " : "", c.token_ids[i]);
        std::printf("\n");
        if (engine.has_tokenizer()) std::printf("text: %s\n", c.text.c_str());
        std::printf("finish: %s\n",
                    std::string(tandem::finish_reason_name(*c.finish_reason)).c_str());
        // One request alone: its first token ends the prefill, the rest is decode.
        const tandem::RequestTimings& t = out.timings;
        // With no token generated (--max-tokens 0) the prefill ends with the request.
        const double prefill_end = c.token_ids.empty() ? t.total_seconds : t.first_token_seconds;
        const double prefill_s = std::max(0.0, prefill_end - t.queue_seconds);
        const double decode_s = std::max(0.0, t.total_seconds - prefill_end);
        auto rate = [](double n, double s) { return s > 0 ? n / s : 0.0; };
        std::printf("prefill: %lld tokens in %.3f s = %.2f tokens/s\n", (long long)t.prefill_tokens,
                    prefill_s, rate(double(t.prefill_tokens), prefill_s));
        std::printf("decode:  %lld tokens in %.3f s = %.2f tokens/s\n", (long long)t.decode_steps,
                    decode_s, rate(double(t.decode_steps), decode_s));
        std::printf("threads: %d\n", engine.thread_count());
        if (const int64_t nodes = engine.stats().numa_nodes; nodes > 0)
            std::printf("numa: routed experts split over %lld node%s\n", (long long)nodes,
                        nodes == 1 ? "" : "s");
        if (!config.expert_device.empty()) print_hybrid_stats(engine.stats());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-run: %s\n", e.what());
        return 1;
    }
    return 0;
}
