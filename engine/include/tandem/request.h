// What goes into a request and what comes out of it.
//
// A request is a prompt (token ids, text or chat messages) and SamplingParams. Its output has
// one Completion per sample (params.n of them), each with the generated token ids, their text,
// optional logprobs and routed experts, and why it finished. Streaming callers get the same
// data as a sequence of StreamDeltas, in order, the last of each sample carrying its
// finish_reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem {

// A function call an assistant message made (OpenAI's tool_calls entries).
struct ToolCall {
    std::string id;
    std::string name;
    std::string arguments;  // a JSON object, as text
};

struct ChatMessage {
    std::string role;  // "system", "user", "assistant", "tool", ...
    std::string content;
    std::vector<ToolCall> tool_calls;  // assistant: the calls it made
    std::string tool_call_id;          // tool: the call this message answers
    std::string name;                  // tool: the function's name (some templates show it)
};

struct Prompt {
    // Exactly one of these is used: token_ids if not empty, else messages if not empty, else
    // text (which may be empty only if the tokenizer adds a BOS token).
    std::vector<int32_t> token_ids;
    std::string text;
    std::vector<ChatMessage> messages;
    // messages: the tools the model may call, as OpenAI's "tools" list in JSON text
    // ([{"type": "function", "function": {"name", "description", "parameters"}}]), rendered
    // by the chat template; a template that has no place for tools gets them in a system
    // message instead (engine/src/chat_prompt.h).
    std::string tools;
    bool add_special_tokens = true;     // text: the tokenizer's BOS/EOS rules
    bool add_generation_prompt = true;  // messages: end with the assistant header

    static Prompt tokens(std::vector<int32_t> ids) {
        Prompt p;
        p.token_ids = std::move(ids);
        return p;
    }
    static Prompt from_text(std::string s) {
        Prompt p;
        p.text = std::move(s);
        return p;
    }
    static Prompt chat(std::vector<ChatMessage> m) {
        Prompt p;
        p.messages = std::move(m);
        return p;
    }
};

enum class FinishReason { Stop, Length, Abort, Error };
std::string_view finish_reason_name(FinishReason reason);  // "stop", "length", "abort", "error"

struct TokenLogprob {
    int32_t token = 0;
    float logprob = 0;
    std::vector<std::pair<int32_t, float>> top;  // the k most probable (token, logprob)
};

// Experts chosen by every MoE layer for each position that went through the model: the prompt
// and then each generated token that was fed back (so the last generated token has none).
struct RoutedExperts {
    int32_t n_layers = 0;          // MoE layers
    int32_t top_k = 0;             // experts per token and layer
    std::vector<int32_t> layers;   // model layer index of each MoE layer
    std::vector<int32_t> experts;  // [positions, n_layers, top_k]
    std::vector<float> weights;    // [positions, n_layers, top_k]: their routing weights
    // With SamplingParams::routing_lookahead = J > 0: [positions, n_layers, J, top_k], the
    // experts layer L + j's router would choose from layer L's MoE input; -1 where L + j is not
    // an MoE layer.
    int32_t lookahead = 0;
    std::vector<int32_t> predicted;
    // With SamplingParams::routing_probabilities: [positions, n_layers, n_experts], the router's
    // probability of every expert by id, before top-k (softmax routers: the softmax over all
    // experts; sigmoid routers: each expert's score); empty otherwise, and on cuda:N's decoder.
    int32_t n_experts = 0;
    std::vector<float> probabilities;
    int64_t positions() const {
        return n_layers * top_k == 0 ? 0 : int64_t(experts.size()) / (n_layers * top_k);
    }
};

struct Completion {
    int32_t index = 0;
    std::vector<int32_t> token_ids;      // generated, including a final EOS or stop token
    std::string text;                    // ends before a matched stop string; no EOS text
    std::vector<TokenLogprob> logprobs;  // one per token_ids entry, when asked
    std::optional<FinishReason> finish_reason;
    std::string stop_reason;  // the stop string that matched, if any
    RoutedExperts routed_experts;
};

struct RequestTimings {
    double queue_seconds = 0;        // submit to admission
    double first_token_seconds = 0;  // submit to the first generated token
    double total_seconds = 0;        // submit to the end
    int64_t prefill_tokens = 0;
    int64_t decode_steps = 0;  // generated tokens after each sample's first
};

struct RequestOutput {
    std::vector<int32_t> prompt_token_ids;
    // For prompt positions 1..n-1: the logprob of that token given those before it.
    std::vector<TokenLogprob> prompt_logprobs;
    std::vector<Completion> completions;  // params.n of them, by index
    int64_t prompt_tokens = 0;
    int64_t cached_prompt_tokens = 0;  // of them, found in the prefix cache (not prefilled)
    int64_t completion_tokens = 0;
    std::string error;  // set when finish_reason is Error
    RequestTimings timings;
};

struct StreamDelta {
    int32_t index = 0;               // which sample
    std::vector<int32_t> token_ids;  // new tokens
    std::string text;                // new text (may be empty while a stop string is possible)
    std::vector<TokenLogprob> logprobs;
    std::optional<FinishReason> finish_reason;  // set on the sample's last delta
    // On a sample's last delta: the request's prompt tokens found in the prefix cache (as
    // RequestOutput::cached_prompt_tokens; the same on every sample of the request).
    int64_t cached_prompt_tokens = 0;
};

// Called on the engine's scheduler thread: keep it short and do not call back into the engine.
using StreamCallback = std::function<void(const StreamDelta&)>;

// A bad request: invalid parameters, a prompt that cannot fit. The engine is unharmed.
class RequestError : public std::invalid_argument {
  public:
    using std::invalid_argument::invalid_argument;
};

// The queue of waiting requests is full: try again later.
class QueueFullError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

class RequestHandle {
  public:
    struct State;
    RequestHandle() = default;
    explicit RequestHandle(std::shared_ptr<State> state) : state_(std::move(state)) {}

    // Stops the request at the next step; its samples finish with FinishReason::Abort and its
    // KV blocks are freed. Harmless after it finished.
    void abort();
    bool finished() const;
    // Blocks until the request finished and returns its output.
    const RequestOutput& wait();
    uint64_t id() const;

  private:
    std::shared_ptr<State> state_;
};

}  // namespace tandem
