// The OpenAI request and response shapes: JSON bodies -> Prompt + SamplingParams, and engine
// outputs -> completion / chat completion objects and stream chunks. Types are checked strictly
// (a string where a number belongs is a 400 naming the field). Structured output
// (response_format, vLLM's guided_* and structured_outputs) becomes SamplingParams.grammar
// (structured_request.h). Known fields that Tandem does not implement (beam search, ...) are
// refused with a 400 naming them unless they hold their no-op value; unknown fields are
// ignored, as vLLM and llama.cpp do.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <tandem/engine.h>
#include <nlohmann/json.hpp>

#include "tools/server/tool_calls.h"

namespace tandem::server {

struct GenerationRequest {
    bool chat = false;
    std::string model;
    std::vector<Prompt> prompts;  // one for chat; completions may batch several
    SamplingParams params;
    bool max_tokens_given = false;
    std::string max_tokens_key = "max_tokens";  // or max_completion_tokens (chat)
    bool stream = false;
    bool include_usage = false;
    bool echo = false;                 // completions: the prompt text before the completion
    int32_t top_logprobs = -1;         // chat: -1 none, else alternatives per token
    int32_t legacy_logprobs = -1;      // completions: -1 none
    int32_t prompt_logprobs = -1;      // vLLM's prompt_logprobs: -1 none, else alternatives
    std::optional<ToolRequest> tools;  // chat: tools, tool_choice, parallel_tool_calls
};

// A request body as JSON; a 400 that says where it is not (never the parser's own text).
nlohmann::json parse_json_body(const std::string& body);

// `vocab_size` bounds the token ids of logit_bias.
GenerationRequest parse_generation_request(const nlohmann::json& body, bool chat,
                                           int64_t vocab_size);

// A token's text for logprob listings and its bytes.
nlohmann::json chat_logprob_entry(const Engine& engine, const TokenLogprob& lp);
nlohmann::json chat_logprobs(const Engine& engine, const std::vector<TokenLogprob>& lps);
// The legacy completions logprobs object; `text_offset` counts from `offset`. With echo, the
// prompt's first token leads with null logprobs.
nlohmann::json completion_logprobs(const Engine& engine, const std::vector<TokenLogprob>& lps,
                                   size_t offset, std::optional<int32_t> unscored_first = {});

// vLLM's prompt_logprobs: null for the first prompt token (nothing to score it in), then per
// token {"id": {"logprob", "rank", "decoded_token"}} for the token itself and the `k` most
// probable. A rank is known for the k listed (1..k); the prompt token outside them has none.
nlohmann::json prompt_logprobs_json(const Engine& engine, const std::vector<TokenLogprob>& lps,
                                    int32_t k);

std::string finish_reason_json(std::optional<FinishReason> reason);
// With cached_tokens, OpenAI's prompt_tokens_details.cached_tokens: prompt tokens the prefix
// cache held (not prefilled).
nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens,
                          std::optional<int64_t> cached_tokens = std::nullopt);

}  // namespace tandem::server
