// Sequence: one sample of a request while it runs: its tokens, KV cache, sampler, detokenizer
// and stop detection. Owned and touched only by the scheduler thread.
#pragma once

#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/kv_cache.h"
#include "engine/src/grammar_worker.h"
#include "engine/src/request_state.h"
#include "engine/src/structured_output.h"
#include "models/tokenizer/tokenizer.h"

namespace tandem {

// Appends the positions of `positions` to `to` (which takes its shape if it has none yet).
void append_routing(RoutedExperts& to, const RoutedExperts& positions);

// log-softmax of a row of logits, with the top-k alternatives when k > 0.
TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int32_t k);

class Sequence {
  public:
    // With a grammar (request.grammar), its masks are computed on `grammar_worker`, which
    // must outlive the sequence.
    Sequence(RequestHandle::State& request, int32_t index, std::unique_ptr<KvCache> cache,
             const Tokenizer* tokenizer, std::span<const int32_t> eos_token_ids,
             int64_t context_length, GrammarWorker* grammar_worker = nullptr);
    ~Sequence();
    Sequence(const Sequence&) = delete;
    Sequence& operator=(const Sequence&) = delete;

    int32_t index() const { return index_; }
    KvCache& cache() { return *cache_; }
    const std::vector<int32_t>& tokens() const { return tokens_; }  // prompt + generated
    int64_t generated() const { return int64_t(completion_.token_ids.size()); }
    bool finished() const { return completion_.finish_reason.has_value(); }
    bool wants_routing() const { return request_.params.return_routed_experts; }
    int64_t routing_positions() const { return completion_.routed_experts.positions(); }

    // Samples the next token from `logits` (the row after the last token), records it and
    // decides whether the sequence ends. Returns the delta to stream.
    StreamDelta advance(std::span<const float> logits);
    // Ends the sequence now (abort or error). Returns the final delta.
    StreamDelta finish(FinishReason reason);

    // Appends positions of routing (a RoutedExperts whose vectors hold only those positions).
    void add_routing(const RoutedExperts& positions);
    Completion take_completion() { return std::move(completion_); }

  private:
    void apply_penalties(std::vector<float>& logits, bool mask_eos) const;
    // scratch_ = the penalized logits of `logits` with the grammar's mask applied.
    void constrain(std::span<const float> logits);
    // Starts computing the grammar's mask for the next token on the worker.
    void prepare_mask();
    // Appends detokenized text and ends at a stop string; returns the text safe to stream.
    std::string append_text(int32_t token);
    std::string flush_text();

    RequestHandle::State& request_;
    int32_t index_;
    std::unique_ptr<KvCache> cache_;
    const Tokenizer* tokenizer_;
    std::span<const int32_t> eos_token_ids_;
    int64_t context_length_;
    Sampler sampler_;
    std::optional<IncrementalDecoder> detokenizer_;
    std::vector<int32_t> tokens_;
    std::unordered_map<int32_t, int32_t> generated_counts_;
    std::vector<float> scratch_;
    std::optional<GrammarMatcher> grammar_;
    GrammarWorker* grammar_worker_;
    std::future<void> mask_ready_;  // the worker's compute_mask() for the next token
    size_t text_streamed_ = 0;      // bytes of completion_.text already streamed
    Completion completion_;
};

}  // namespace tandem
