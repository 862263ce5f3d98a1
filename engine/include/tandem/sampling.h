// SamplingParams and Sampler: how the next token is drawn from a row of logits, and when a
// sequence stops.
//
// Order of processing a row of logits (the model's raw output):
//   1. logprobs, when asked, are taken from the raw logits (the model's own distribution, so
//      they equal Engine::score() of the same sequence);
//   2. penalties: repetition_penalty over prompt and generated tokens (Hugging Face's rule:
//      positive logits divided, negative multiplied), then presence and frequency penalties
//      over the generated tokens (OpenAI's rule: logit -= frequency * count + presence);
//   3. before min_tokens tokens exist, EOS and stop_token_ids are masked out;
//   4. logit_bias is added to its tokens' logits (OpenAI's rule: -100 all but bans a token,
//      +100 all but forces it); a masked token stays masked;
//   4b. with a grammar, every token that cannot continue a valid output is masked (EOS only
//      where the output is complete); should 3 have masked all that the grammar allows (EOS
//      before min_tokens where only EOS is valid), the grammar wins;
//   5. temperature 0 means greedy (argmax). Otherwise logits / temperature, softmax, top_k,
//      top_p (smallest most-probable set reaching top_p), min_p (p >= min_p * p_max),
//      renormalise, draw.
// A Sampler owns its random stream: the same seed, inputs and parameters give the same tokens.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tandem {

// Structured output: what the generated text must be, enforced at every token by masking the
// tokens that cannot continue it (engine/src/structured_output.h; xgrammar is the engine).
struct GrammarSpec {
    enum class Kind {
        JsonObject,  // any JSON object (OpenAI's response_format "json_object"); text unused
        JsonSchema,  // text: a JSON schema, strictly (no properties beyond those it lists)
        Regex,       // text: a regular expression the whole output matches
        Ebnf,        // text: an EBNF grammar (GBNF-like; the rule "root" starts)
        // text: function calls in a model's own syntax, as JSON:
        //   {"prefix": s, "separator": s, "suffix": s, "max_calls": n,
        //    "alternatives": [{"begin": s, "schema": {JSON schema}, "end": s}, ...]}
        // = prefix, then 1..max_calls calls joined by separator, then suffix; a call is one
        // alternative: its begin text, a JSON value of its schema, its end text. (How
        // tool_choice "required" or a named function is enforced, in each model's syntax.)
        ToolCalls,
    };
    Kind kind = Kind::JsonObject;
    std::string text;
    // JSON only: any white space between tokens (true), or the compact form (false), which
    // leaves a model fewer ways to wander.
    bool any_whitespace = false;
};

struct SamplingParams {
    int32_t n = 1;                        // independent samples of the same prompt
    float temperature = 1.0f;             // 0: greedy
    int32_t top_k = 0;                    // 0: off
    float top_p = 1.0f;                   // 1: off
    float min_p = 0.0f;                   // 0: off
    std::optional<uint64_t> seed;         // absent: drawn at random; sample i uses seed + i
    int32_t max_tokens = 16;              // generated tokens at most, per sample
    int32_t min_tokens = 0;               // EOS and stop tokens are not sampled before this many
    std::vector<std::string> stop;        // stop strings; the text ends before the first match
    std::vector<int32_t> stop_token_ids;  // extra tokens that end a sample like EOS
    bool ignore_eos = false;
    float presence_penalty = 0.0f;    // [-2, 2]
    float frequency_penalty = 0.0f;   // [-2, 2]
    float repetition_penalty = 1.0f;  // > 0; 1: off
    // (token, bias in [-100, 100]) added to the token's logit before sampling; a token may
    // appear once. Ids beyond the vocabulary fail the request.
    std::vector<std::pair<int32_t, float>> logit_bias;
    int32_t logprobs = -1;               // -1: none; k >= 0: the sampled token's and the top k
    int32_t prompt_logprobs = -1;        // -1: none; k >= 0: each prompt token's and the top k
    bool return_routed_experts = false;  // the experts each MoE layer chose, per position
    int32_t routing_lookahead = 0;       // 0-3: with routed experts, also what layers L+1..L+j's
                                         // routers would choose from layer L's input
    bool routing_probabilities = false;  // with routed experts, also every expert's router
                                         // probability (the full distribution MRS scores)
    bool skip_special_tokens = true;     // in the returned text
    // Structured output: the text follows this grammar and the sample ends (finish_reason
    // stop) once it is complete, unless max_tokens or a stop string cut it short first.
    // Needs the model's tokenizer.
    std::optional<GrammarSpec> grammar;
};

// Throws tandem::Error naming the parameter when a value is out of range.
void validate(const SamplingParams& params);

// The largest k of logprobs / prompt_logprobs a request may ask for.
inline constexpr int32_t kMaxLogprobs = 20;

class Sampler {
  public:
    // Seeded with params.seed (0 if absent), or with `seed`.
    explicit Sampler(const SamplingParams& params) : Sampler(params, params.seed.value_or(0)) {}
    Sampler(const SamplingParams& params, uint64_t seed);
    // Draws from `logits` (penalties already applied; logit_bias is added here); the row is
    // left unchanged.
    int32_t sample(std::span<const float> logits);

  private:
    int32_t sample_row(std::span<const float> logits);

    // Draws from candidates_ in their current order, total = the sum of their weights.
    int32_t draw(double total);

    SamplingParams params_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> candidates_;  // scratch: (probability, token)
    std::vector<float> biased_;                          // scratch: logits + logit_bias
};

int32_t argmax(std::span<const float> logits);

}  // namespace tandem
